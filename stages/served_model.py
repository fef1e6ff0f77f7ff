"""The served model as MLflow's models-from-code loads it: register logs this file as the pyfunc's `python_model`, so
the registry stores code (this file and the stages package) and no pickled Python object. MLflow runs it when it
saves and when it loads the model, after putting the logged `stages` package on sys.path.

Unlike every other module here it does something at import: declaring the model is what the file is for.
"""

import mlflow

from stages.serving import Served

mlflow.models.set_model(Served())

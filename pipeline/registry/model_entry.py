"""Entry file for MLflow's "models from code": MLflow runs this file to get the model object."""

from mlflow.models import set_model

from pipeline.registry.raw_text_model import RawTextClassifier

set_model(RawTextClassifier())

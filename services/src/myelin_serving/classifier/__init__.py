"""The classifier family: MNIST digit classifiers (mnist-mlp, mnist-cnn) behind `Classifier`."""

from __future__ import annotations

from myelin_api.v1 import classifier_pb2, classifier_pb2_grpc
from myelin_serving.classifier.model import load
from myelin_serving.classifier.servicer import ClassifierServicer
from myelin_serving.family import Family, ServingContext
from myelin_serving.interceptors import HandlerRegistry


def _add_servicers(server: HandlerRegistry, context: ServingContext) -> None:
    classifier_pb2_grpc.add_ClassifierServicer_to_server(ClassifierServicer(context), server)


FAMILY = Family(
    name="classifier",
    service_names=(classifier_pb2.DESCRIPTOR.services_by_name["Classifier"].full_name,),
    load=load,
    add_servicers=_add_servicers,
)

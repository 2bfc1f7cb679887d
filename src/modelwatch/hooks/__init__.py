"""Airflow hooks for the servers modelwatch reads and writes: Prometheus, Alertmanager, MLflow, Pushgateway,
CloudWatch."""

from modelwatch.hooks.alertmanager import AlertmanagerHook
from modelwatch.hooks.base import ApiHook
from modelwatch.hooks.cloudwatch import CloudWatchHook
from modelwatch.hooks.mlflow import MlflowHook
from modelwatch.hooks.prometheus import PrometheusHook
from modelwatch.hooks.pushgateway import PushgatewayHook

__all__ = ["AlertmanagerHook", "ApiHook", "CloudWatchHook", "MlflowHook", "PrometheusHook", "PushgatewayHook"]

# What ``stn_deploy/__init__.py`` exposes lazily, for type checkers and editors (the module
# itself imports these only on first use). tests/test_api.py keeps the two in step.
from stn_deploy.errors import UserError as UserError
from stn_deploy.errors import ValidationFailed as ValidationFailed
from stn_deploy.jobs.bench import bench as bench
from stn_deploy.jobs.bench.options import BenchOptions as BenchOptions
from stn_deploy.jobs.doctor import doctor as doctor
from stn_deploy.jobs.export import ExportOptions as ExportOptions
from stn_deploy.jobs.export import export as export
from stn_deploy.jobs.export import export_user_module as export_user_module
from stn_deploy.jobs.run import RunOptions as RunOptions
from stn_deploy.jobs.run import run as run
from stn_deploy.jobs.train import TrainOptions as TrainOptions
from stn_deploy.jobs.train import train as train
from stn_deploy.jobs.validate import ValidateOptions as ValidateOptions
from stn_deploy.jobs.validate import validate as validate
from stn_deploy.rewriter import RewriteOptions as RewriteOptions
from stn_deploy.rewriter import rewrite as rewrite
from stn_deploy.schema import SamplerSettings as SamplerSettings
from stn_deploy.trt.builder import build as build
from stn_deploy.trt.options import BuildOptions as BuildOptions

__version__: str
JOBS: dict[str, tuple[str, str]]
OPTIONS: dict[str, str]
__all__: list[str]

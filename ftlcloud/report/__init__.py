"""ftlcloud.report: figures (the paper's Fig. 3, 4, 6, 7) and an HTML report, as bytes.

Pure: data in, ``{relative file name: bytes}`` out; the pipeline writes the folder to the store.
"""

from ftlcloud.report.build import build_iteration_report, build_report, restrict_to_iteration
from ftlcloud.report.model import AreaRasters, IterationSummary, ReportInputs

__all__ = [
    "AreaRasters",
    "IterationSummary",
    "ReportInputs",
    "build_iteration_report",
    "build_report",
    "restrict_to_iteration",
]

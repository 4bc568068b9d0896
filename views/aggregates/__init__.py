"""Aggregates: small mergeable state machines, one class each, each owning all its facts.

``base`` holds the contract and the facts every class declares; one module per family holds the
classes. ``views.spec.KINDS`` lists the classes a view may use.
"""

from views.aggregates.base import Aggregate, Fold, Grouped, GroupKey, NotRemovable, whole
from views.aggregates.count import Count
from views.aggregates.distinct import ApproxCountDistinct, CountDistinct
from views.aggregates.extremes import Max, Min, SortedMax, SortedMin
from views.aggregates.percentile import ApproxPercentile, SortedPercentile
from views.aggregates.sums import Avg, Sum
from views.aggregates.topk import TopK

__all__ = [
    "Aggregate",
    "ApproxCountDistinct",
    "ApproxPercentile",
    "Avg",
    "Count",
    "CountDistinct",
    "Fold",
    "GroupKey",
    "Grouped",
    "Max",
    "Min",
    "NotRemovable",
    "SortedMax",
    "SortedMin",
    "SortedPercentile",
    "Sum",
    "TopK",
    "whole",
]

"""Aggregates: the state of every (bucket, group) pair of a view partition, in numpy arrays, one
class per aggregate, each owning all its facts (``base`` holds the contract).

``views.spec.KINDS`` lists the classes a view may use.
"""

from views.aggregates.base import Aggregate, Batch, NotRemovable, whole
from views.aggregates.count import Count
from views.aggregates.distinct import ApproxCountDistinct, CountDistinct
from views.aggregates.extremes import Max, Min, SortedMax, SortedMin, SortedPercentile
from views.aggregates.percentile import ApproxPercentile
from views.aggregates.sums import Avg, Sum
from views.aggregates.topk import TopK

__all__ = [
    "Aggregate",
    "ApproxCountDistinct",
    "ApproxPercentile",
    "Avg",
    "Batch",
    "Count",
    "CountDistinct",
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

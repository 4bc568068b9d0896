"""Aggregates: small mergeable state machines, one class each (see ``base`` for the contract)."""

from views.aggregates.base import (
    Aggregate,
    ApproxCountDistinct,
    ApproxPercentile,
    Avg,
    Count,
    CountDistinct,
    Max,
    Min,
    NotRemovable,
    SortedMax,
    SortedMin,
    SortedPercentile,
    Sum,
    TopK,
    _grow,
    whole,
)

__all__ = [
    "Aggregate",
    "ApproxCountDistinct",
    "ApproxPercentile",
    "Avg",
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
    "_grow",
    "whole",
]

"""The workflow language: safe YAML loading, DSL validation with precise diagnostics, the
operation catalog (`operations`) and jq expressions (`expressions`)."""

from workflowd.spec.expressions import (
    EvaluationLimitError,
    Evaluator,
    ExpressionError,
    SchemaResult,
    SchemaUnusableError,
    check_expression,
    expression_source,
    is_expression,
)
from workflowd.spec.operations import OPERATIONS, Operation
from workflowd.spec.validate import Limits, ValidationResult, parse, validate

__all__ = [
    "OPERATIONS",
    "EvaluationLimitError",
    "Evaluator",
    "ExpressionError",
    "Limits",
    "Operation",
    "SchemaResult",
    "SchemaUnusableError",
    "ValidationResult",
    "check_expression",
    "expression_source",
    "is_expression",
    "parse",
    "validate",
]

"""Algorithmic reasoning: BIG-bench list_functions and simp_turing_concept, and generated tasks like them."""

from .bigbench import BigBenchError, Subtask, find_bigbench_dir, load_bigbench
from .categories import CATEGORIES, CATEGORY_TITLES, categorize
from .concepts import CONCEPT_FAMILIES, generate_concept_task, program_length
from .list_functions import FAMILIES, generate_list_task
from .score import format_algorithmic_tables, score_algorithmic, score_generation
from .suite import (
    LIST_SETTINGS,
    PARTS,
    AlgoPlan,
    AlgoRequest,
    build_algorithmic_requests,
)

__all__ = [
    "CATEGORIES",
    "CATEGORY_TITLES",
    "CONCEPT_FAMILIES",
    "FAMILIES",
    "LIST_SETTINGS",
    "PARTS",
    "AlgoPlan",
    "AlgoRequest",
    "BigBenchError",
    "Subtask",
    "build_algorithmic_requests",
    "categorize",
    "find_bigbench_dir",
    "format_algorithmic_tables",
    "generate_concept_task",
    "generate_list_task",
    "load_bigbench",
    "program_length",
    "score_algorithmic",
    "score_generation",
]

"""Knowledge data sets: the synthetic world and the tables every recipe reads."""

from pit.data.dataset import DOC_COLUMNS, QA_COLUMNS, KnowledgeDataset

__all__ = ["DOC_COLUMNS", "QA_COLUMNS", "KnowledgeDataset"]

"""prism_kernels.data: datasets in, rendered and masked token sequences out.

Readers (JSONL, Parquet, CSV, Hugging Face datasets) stream rows as lists of `Record`s with global row
ids and their source file and line; `FieldMap` turns a record into a `Sample` (a prompt conversation and
the response that carries the loss); `Renderer` renders samples with the tokenizer's chat template (or a
plain prompt + "\\n" + response) and marks where the response starts. User mistakes raise `DataError`
(a ValueError) whose message is one line naming the file / line / field.

Heavy dependencies (pyarrow, datasets, transformers) are imported inside the functions that use them.
"""

from .errors import DataError
from .fields import FieldMap, Sample, detect_fields, parse_fields
from .readers import Dataset, Record, SourceInfo, open_dataset
from .render import Rendered, Renderer

__all__ = ["DataError", "open_dataset", "Dataset", "Record", "SourceInfo", "FieldMap", "detect_fields",
           "parse_fields", "Sample", "Renderer", "Rendered"]

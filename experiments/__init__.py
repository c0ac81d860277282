"""Experiments: the spec, pipeline loading, model families, cache methods and the generation engine.

Knows nothing of W&B, SQLite or figures (see ``repro`` and ``paper_figures``).
"""

import logging as _logging


class _KnownImportNoise(_logging.Filter):
    """Two warnings that every pipeline load prints once torchao (the quantization extra) is installed, although
    nothing here is affected: diffusers cannot find tensor classes of old torchao checkpoints (we quantize on
    load and read no torchao-serialized weights), and torch deprecates how torchao registers two enums."""

    def filter(self, record: _logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith("Unable to import `torchao` Tensor objects")
                    or "is an Enum subclass and is now natively supported by torch.compile" in text)


for _name in ("diffusers.quantizers.torchao.torchao_quantizer", "torch.utils._pytree"):
    _logging.getLogger(_name).addFilter(_KnownImportNoise())

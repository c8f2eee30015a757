"""Names that moved between modules still import from their old place, warn, and are the same objects."""

import subprocess
import sys
import warnings

import pytest

import hf_lnorm
from hf_lnorm import errors
from hf_lnorm.export import seq2seq
from hf_lnorm.norms import quantized

OLD_PATHS = [("hf_lnorm.norms.quantized", name, module, new) for name, (module, new) in sorted(quantized.MOVED.items())]
OLD_PATHS += [("hf_lnorm.export.seq2seq", name, module, name) for name, module in sorted(seq2seq._MOVED.items())]


@pytest.mark.parametrize("old, name, module, new", OLD_PATHS, ids=[f"{o}.{n}" for o, n, _, _ in OLD_PATHS])
def test_old_import_path_warns_and_resolves_to_the_same_object(old, name, module, new):
    import importlib

    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} has moved: use 'from {module} import {new}'"):
        got = getattr(importlib.import_module(old), name)
    assert got is getattr(importlib.import_module(module), new)


def test_from_import_statement_warns_at_the_caller():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from hf_lnorm.norms.quantized import calibrate  # noqa: F401
    assert [w.category for w in caught] == [DeprecationWarning]
    assert caught[0].filename == __file__  # points at the line to change, not at the shim
    assert calibrate is hf_lnorm.calibrate


def test_unknown_names_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        quantized.nope  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        seq2seq.nope  # noqa: B018


def test_shared_errors_are_one_class_everywhere():
    from hf_lnorm import cli, export

    assert cli.UsageError is errors.UsageError
    assert export.UnsupportedArchitectureError is errors.UnsupportedArchitectureError
    assert issubclass(errors.UnsupportedArchitectureError, ValueError)


def test_the_package_itself_uses_no_old_path():
    """Importing the whole package (modes, families, export specs) triggers none of the deprecation warnings."""
    code = ("import hf_lnorm, hf_lnorm.export, hf_lnorm.export.optimize, hf_lnorm.export.onnx_configs, "
            "hf_lnorm.benchmarks.quantized, hf_lnorm.commands.patch, hf_lnorm.cli")
    proc = subprocess.run([sys.executable, "-W", "error:hf_lnorm:DeprecationWarning", "-c", code],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_encoder_decoder_specs_are_registered_once_by_their_own_modules():
    from hf_lnorm.export.families import EncoderDecoderFamily, family_of, register_family, registered_families
    from hf_lnorm.export.seq2seq import TEXT
    from hf_lnorm.export.speech import SPEECH
    from hf_lnorm.models import LNormSeq2SeqConfig, LNormSpeechConfig

    assert {f.model_type for f in registered_families()} >= {"lnorm-seq2seq", "lnorm-speech"}

    class Model:
        def __init__(self, config):
            self.config = config

    assert family_of(Model(LNormSeq2SeqConfig())) is TEXT
    assert family_of(Model(LNormSpeechConfig())) is SPEECH
    assert family_of(Model(None)) is None
    assert register_family(SPEECH) is SPEECH  # registering the same spec again is a no-op
    other = EncoderDecoderFamily(**{**SPEECH.__dict__, "verify_sizes": (1, 8, 2)})
    with pytest.raises(ValueError, match="'lnorm-speech' is already registered"):
        register_family(other)
    assert family_of(Model(LNormSpeechConfig())) is SPEECH

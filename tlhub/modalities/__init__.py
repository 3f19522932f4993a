"""Modalities: how to load a model and turn raw examples into tensors.

One file per modality, each registering itself where it is defined::

    @MODALITIES.register("audio")
    class AudioModality(Modality): ...

A modality knows its columns, its processor (tokenizer, image processor, feature
extractor), its ``AutoModelFor...`` classes and its collator; it knows nothing about
strategies or the order of a run (that is `tlhub.pipeline`). :class:`Modality` holds
the defaults; a modality overrides what differs. The media helpers every modality of
files shares (decoding cells, skipping unreadable rows) are in :mod:`tlhub.modalities.media`.
"""

from tlhub.modalities.base import MODALITIES, Modality, get_modality

# Import the modality modules so that they register themselves.
from tlhub.modalities import text as _text  # noqa: E402,F401
from tlhub.modalities import image as _image  # noqa: E402,F401
from tlhub.modalities import audio as _audio  # noqa: E402,F401
from tlhub.modalities import timeseries as _timeseries  # noqa: E402,F401

__all__ = ["MODALITIES", "Modality", "get_modality"]

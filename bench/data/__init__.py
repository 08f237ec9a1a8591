"""Corpora (embedded default, LibriSpeech / VoxCeleb / manifest loaders), mixing, conditions.

Importing :mod:`bench.data.loaders` registers the ``dataset`` plugins.
"""

from bench.data.corpus import Corpus, Utterance, load_corpus

__all__ = ["Corpus", "Utterance", "load_corpus"]

"""The corpus error rate that wer.py and cer.py report, through jiwer."""

import jiwer


def error_rate(predictions: list[str], references: list[str], characters: bool) -> float:
    """Edits over reference units (words, or characters), summed over rows. Rows with an empty
    reference, which jiwer refuses, add their predicted units as insertions."""
    kept = [(p, r) for p, r in zip(predictions, references) if r.strip()]
    inserted = sum(len(p) if characters else len(p.split()) for p, r in zip(predictions, references) if not r.strip())
    edits, units = inserted, 0
    if kept:
        preds, refs = [p for p, _ in kept], [r for _, r in kept]
        out = jiwer.process_characters(refs, preds) if characters else jiwer.process_words(refs, preds)
        edits += out.substitutions + out.deletions + out.insertions
        units += out.substitutions + out.deletions + out.hits
    return edits / max(units, 1)

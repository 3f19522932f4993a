"""Domain adaptation: train on a labelled source domain, adapt to an unlabelled target.

- :mod:`~tlhub.domain.settings`: the `domain_adaptation` section (methods, weights, DAPT);
- :mod:`~tlhub.domain.losses`: gradient reversal, the domain classifier, MCC, pseudo-labels, CORAL, MMD;
- :mod:`~tlhub.domain.model`: the module the Trainer trains, the task model plus what a method adds;
- :mod:`~tlhub.domain.adaptation`: what the Trainer does with it (target batches, logging);
- :mod:`~tlhub.domain.target`: the target data; :mod:`~tlhub.domain.results`: what a run reports of it;
- :mod:`~tlhub.domain.runs`: the runs one config becomes (source-only baseline, DAPT, the
  self-training teacher, the adapted run), started by one orchestrating function, :func:`adapt`.

The methods, chosen by ``domain_adaptation.method``: ``mcc`` (Minimum Class Confusion on the
target's predictions), ``self_training`` (confident target predictions as labels, then a
fresh model on a teacher's class-balanced labels), ``dann`` and ``cdan`` (a domain classifier
through gradient reversal), ``coral`` and ``mmd`` (feature statistics aligned), ``dapt``
(text: masked-LM pretraining on the target first) and ``source_only`` (the baseline). The
target's labels, where it has them, are never trained on: they score the adaptation
(``target_accuracy``) beside a source-only run of the same config.
"""

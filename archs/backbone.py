"""What TSN (ops/models.py) and the training loop ask of a backbone: ``VideoBackbone``.

Every constructor of the registry (archs.BACKBONES) returns a module whose class inherits
``VideoBackbone`` (listed first, before the ``nn.Module`` subclass); ``archs.create_backbone`` refuses
anything else. The hooks below have the defaults of a plain classification backbone; a family overrides
the ones it needs (ILA: all of them), so callers read them directly instead of probing with ``hasattr``.

Attributes every backbone carries:

- ``last_layer_name``: the classifier attribute TSN replaces (2D backbones: 'fc' or 'classifier'); video
  backbones have none and return features, so TSN adds ``new_fc`` and reads ``feature_dim`` (int, D of
  their (B, D) output) instead;
- ``input_mean``, ``input_std``, ``flow_mean``, ``input_space``, ``input_range``: set by
  ``archs.create_backbone`` from the registry entry's ``Normalization``.

A family can also own command-line options (``FamilyOptions``, named by its registry entries): opts.py
adds them to main.py's and test_models.py's parsers in a group of their own, so a new backbone brings its
options with it.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Option:
    """One argparse option: ``group.add_argument(*flags, **kwargs)``."""
    flags: tuple
    kwargs: tuple = ()           # ((keyword, value), ...), so the declaration stays immutable

    def add_to(self, group):
        group.add_argument(*self.flags, **dict(self.kwargs))


@dataclasses.dataclass(frozen=True)
class FamilyOptions:
    """The command-line options only one backbone family reads."""
    title: str                   # of the argparse group
    train: tuple = ()            # Options of main.py
    test: tuple = ()             # Options of test_models.py (and predict.py)
    # ((option dest, dataset trait), ...): an option left at 'auto' takes the dataset registry's trait
    # (ops.dataset_config.DatasetSpec field) when main.py derives its arguments
    from_dataset: tuple = ()


class VideoBackbone:
    """The optional hooks of a backbone, with their defaults (a mixin: it defines no ``__init__``)."""

    last_layer_name = 'fc'
    # int when the backbone classifies by itself over class names (ILA's text head): TSN then adds no
    # new_fc and no dropout, and the logits are the backbone's (B, num_class) output
    num_class = None
    # 0-dim loss tensor of the last forward that training adds to the task loss (ILA's alignment loss)
    aux_loss = None

    def set_epoch(self, epoch):
        """Called before every training epoch (ILA: the jitter of its alignment points decays with it)."""

    def get_optim_policies(self, model, *, lr, weight_decay):
        """The optimiser groups of ``model`` (the TSN holding this backbone: its head included), each with
        absolute 'lr' and 'weight_decay'; None: TSN's own groups (lr_mult / decay_mult) apply."""
        return None

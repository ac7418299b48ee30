"""Symptom × model facts → remedies ranked by how well they fit *this* model.

Each rule looks at the facts and either declines (the model already has it,
or it does not apply) or returns a score in [0, 1] and a reason that quotes
the model. Scores order remedies; they are not probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

from .facts import ADAPTIVE, GATED_RECURRENT, HE_GAIN, MATCHED_GAIN, SATURATING, LayerFacts, ModelFacts
from .options import Framework
from .report import Finding, Remedy, counted
from .symptoms import declared

Rule = Callable[[ModelFacts], "tuple[float, str] | None"]


def _share(layers: tuple[LayerFacts, ...], of: tuple[LayerFacts, ...]) -> str:
    return f"{len(layers)} of your {len(of)} layers"


def relu_family(facts: ModelFacts) -> tuple[float, str] | None:
    saturating = facts.layers_with(SATURATING)
    if not saturating:
        return None
    kinds = "/".join(sorted({layer.activation for layer in saturating if layer.activation}))
    return 0.9, (
        f"{_share(saturating, facts.layers)} are followed by {kinds}, whose slope is at most "
        f"{'0.25' if kinds == 'Sigmoid' else '1 and near 0 once saturated'}; ReLU, LeakyReLU, ELU or GELU pass "
        "gradient with slope about 1 for active units"
    )


def leaky_relu(facts: ModelFacts) -> tuple[float, str] | None:
    plain = facts.layers_with(frozenset({"ReLU", "ReLU6"}))
    if plain:
        return 0.9, (
            f"{_share(plain, facts.layers)} use plain ReLU, which has zero gradient for negative inputs; "
            "LeakyReLU, PReLU or ELU keep a small gradient so units can recover"
        )
    return 0.6, "no ReLU module was found (F.relu is likely): LeakyReLU, PReLU or ELU keep a gradient for negative inputs"


def skip_connections(facts: ModelFacts) -> tuple[float, str] | None:
    if facts.residual or facts.depth < 4:
        return None
    found = "gradwatch found no residual connections" if facts.residual is False else "if it has no skip connections yet"
    return 0.8, (
        f"your model is {facts.depth} parameterised layers deep and {found}; a residual path y = x + f(x) "
        "carries gradient to the bottom layers unattenuated"
    )


def normalization(facts: ModelFacts) -> tuple[float, str] | None:
    if facts.normalization:
        return None
    return 0.6, (
        f"none of your {facts.depth} layers is followed by BatchNorm or LayerNorm; normalisation keeps "
        "pre-activations in the range where gradients flow"
    )


def matched_init(facts: ModelFacts) -> tuple[float, str] | None:
    if facts.normalization and facts.residual:  # normalised residual blocks (transformers): their small init is by design
        return None
    off = []
    for layer in facts.trainable_layers:
        if layer.init_gain is None or layer.activation is None:
            continue
        want = MATCHED_GAIN.get(layer.activation, 1.0)
        if not 0.7 * want <= layer.init_gain <= 1.4 * want:
            off.append((layer, want))
    if not off:
        return None
    layer, want = off[0]
    scheme = "He (Kaiming)" if want == HE_GAIN else "LeCun" if layer.activation == "SELU" else "Xavier/Glorot"
    return 0.5, (
        f"{counted(len(off), 'layer')} {'starts' if len(off) == 1 else 'start'} with std·√fan_in far from what their activation wants, e.g. {layer.name} "
        f"({layer.activation}) at {layer.init_gain:.2f} vs {want:.2f} for {scheme} init"
    )


def gated_rnn(facts: ModelFacts) -> tuple[float, str] | None:
    vanilla = [kind for kind in facts.recurrent if kind not in GATED_RECURRENT]
    if not vanilla:
        return None
    return 0.95, (
        f"your model uses a vanilla {vanilla[0]}: its gradient through time shrinks geometrically; "
        "LSTM or GRU gates keep an additive path across time steps"
    )


def gradient_clipping(facts: ModelFacts) -> tuple[float, str] | None:
    if facts.grad_clipping:
        return None
    return 0.85, "clip the global gradient norm so one bad batch cannot blow up the weights"


def lower_lr(facts: ModelFacts) -> tuple[float, str] | None:
    lr = f"your learning rate is {facts.lr:.3g}" if facts.lr is not None else "the learning rate is unknown"
    return 0.8, f"{lr}; try 3–10× lower{'' if facts.lr_rose else ', or a warmup'}, so one step cannot overshoot"


def raise_lr(facts: ModelFacts) -> tuple[float, str] | None:
    if facts.lr is None:
        return 0.6, "steps are tiny relative to the weights; try a larger learning rate"
    return 0.9, f"your learning rate {facts.lr:.3g} moves the weights by a tiny fraction per step; try 10–100× larger"


def reduce_weight_decay(facts: ModelFacts) -> tuple[float, str] | None:
    if facts.regularized:
        names = ", ".join(facts.regularized[:3]) + (" …" if len(facts.regularized) > 3 else "")
        carry = "carries" if len(facts.regularized) == 1 else "carry"
        return 0.95, f"{counted(len(facts.regularized), 'layer')} {carry} a weight regularizer ({names}); lower its factor or remove it"
    if facts.weight_decay is None or facts.weight_decay == 0:
        return 0.5, "no optimizer weight decay was found; look for an L2/L1 penalty in the loss or regularizers pulling weights to zero"
    shrink = f", which multiplies the weights by {1 - facts.lr * facts.weight_decay:.3g} every step" if facts.lr else ""
    return 0.95, f"your weight decay is {facts.weight_decay:.3g}{shrink}; typical values are 1e-4 to 1e-2"


def truncated_bptt(facts: ModelFacts) -> tuple[float, str] | None:
    return 0.7, (
        "the gradient dies out before it reaches the start of the sequence; train on shorter truncated-BPTT "
        "windows, or add skip connections in time (dilated or attention shortcuts) so early steps get gradient"
    )


def recurrent_init(facts: ModelFacts) -> tuple[float, str] | None:
    kinds = ", ".join(sorted(set(facts.recurrent))) or "recurrent"
    lstm = "; for an LSTM, a forget-gate bias of 1 keeps the cell path open" if "LSTM" in facts.recurrent else ""
    return 0.6, (
        f"initialise the {kinds} hidden-to-hidden weights orthogonally (or as the identity with a ReLU cell, IRNN) "
        f"so repeated multiplication neither shrinks nor grows the gradient at the start{lstm}"
    )


def random_init(facts: ModelFacts) -> tuple[float, str] | None:
    return 1.0, (
        "units that start with equal weights get equal gradients and stay copies; keep the framework's random "
        "default, or draw the weights (He/Kaiming for ReLU, Xavier/Glorot for tanh and sigmoid), and keep "
        "constant or zero initialisation for biases"
    )


def clear_gradients(facts: ModelFacts) -> tuple[float, str] | None:
    return 1.0, "backward adds to .grad; unless it is cleared once per optimizer step, each step applies the sum of every gradient so far"


def train_mode(facts: ModelFacts) -> tuple[float, str] | None:
    return 1.0, "in eval mode BatchNorm normalises with running statistics it no longer updates and Dropout drops nothing"


def add_to_optimizer(facts: ModelFacts) -> tuple[float, str] | None:
    return 1.0, "an optimizer steps only the parameters it was given when it was built; parameters added later get gradients and never change"


def fix_schedule(facts: ModelFacts) -> tuple[float, str] | None:
    return 1.0, (
        "a schedule sized in epochs but stepped every batch runs its whole course within the first epoch: it reaches "
        "its final learning rate at once, or (a cosine) cycles back up every few dozen steps"
    )


def pair_inputs_and_labels(facts: ModelFacts) -> tuple[float, str] | None:
    return 1.0, (
        "check that each input still sits next to its own label: the same permutation for both when shuffling, "
        "permute() (not view()) to reorder axes, the right label column; then train on a few batches until it overfits them"
    )


def unfreeze(facts: ModelFacts) -> tuple[float, str] | None:
    return 1.0, "frozen layers keep the features of another task; unfreeze at least the top blocks (a lower learning rate for them is fine)"


def warmup(facts: ModelFacts) -> tuple[float, str] | None:
    if facts.lr_rose:  # it warms up already
        return None
    if facts.optimizer in ADAPTIVE:
        why = f"{facts.optimizer}'s running estimate of the gradients' scale is still young then, so full-size steps early are far larger than they look"
    else:
        why = "the first steps, taken before the weights and the loss settle, are the ones that overshoot"
    return 0.9, f"warm the learning rate up linearly over the first few hundred steps: {why}"


def qk_norm(facts: ModelFacts) -> tuple[float, str] | None:
    return 0.9, (
        "apply LayerNorm to the queries and keys of each attention head before their dot product (qk-layernorm): "
        "attention logits then cannot grow until attention is one-hot (Wortsman et al. 2023)"
    )


def z_loss(facts: ModelFacts) -> tuple[float, str] | None:
    return 0.7, (
        "add z-loss, 1e-4 × mean(logsumexp(logits)²), to the loss: it holds the output log-partition near 0 so "
        "the output logits cannot drift apart (PaLM; Wortsman et al. 2023)"
    )


def adam_epsilon(facts: ModelFacts) -> tuple[float, str] | None:
    return 0.5, (
        "where a layer's gradients are as small as Adam's epsilon, epsilon sets its step instead of the gradient's "
        "own scale: a smaller epsilon (1e-15 rather than 1e-8) keeps the step proportionate (Wortsman et al. 2023; "
        "Molybog et al. 2023)"
    )


def skip_batch(facts: ModelFacts) -> tuple[float, str] | None:
    return 0.5, (
        "skip the optimizer step when the loss or the gradient norm jumps far above its recent level, or restart "
        "from a checkpoint a few hundred steps earlier and skip the batches around the spike (PaLM)"
    )


def pretraining(facts: ModelFacts) -> tuple[float, str] | None:
    return 0.1, "last resort: train the layers greedily one at a time (layer-wise pretraining), then fine-tune the whole network"


REMEDIES: dict[str, tuple[str, Rule]] = {
    "gated_rnn": ("Use LSTM or GRU instead of a vanilla RNN", gated_rnn),
    "relu_family": ("Use ReLU-family activations (ReLU, LeakyReLU, ELU, GELU)", relu_family),
    "leaky_relu": ("Use LeakyReLU, PReLU or ELU instead of ReLU", leaky_relu),
    "skip_connections": ("Add residual (skip) connections", skip_connections),
    "normalization": ("Add batch or layer normalisation", normalization),
    "matched_init": ("Initialise to match the activation (He, Xavier, LeCun)", matched_init),
    "gradient_clipping": ("Clip gradients by global norm", gradient_clipping),
    "lower_lr": ("Lower the learning rate", lower_lr),
    "raise_lr": ("Raise the learning rate", raise_lr),
    "reduce_weight_decay": ("Reduce weight decay / L2 regularisation", reduce_weight_decay),
    "layerwise_pretraining": ("Layer-wise pretraining", pretraining),
    "truncated_bptt": ("Shorter BPTT windows or skip connections in time", truncated_bptt),
    "recurrent_init": ("Orthogonal or identity recurrent initialisation", recurrent_init),
    "random_init": ("Initialise the weights randomly", random_init),
    "clear_gradients": ("Clear the gradients every step", clear_gradients),
    "train_mode": ("Put the model back in training mode", train_mode),
    "add_to_optimizer": ("Give the optimizer every trainable parameter", add_to_optimizer),
    "fix_schedule": ("Step the learning-rate schedule at the rate it was sized for", fix_schedule),
    "pair_inputs_and_labels": ("Check that inputs and labels correspond", pair_inputs_and_labels),
    "unfreeze": ("Unfreeze more of the model", unfreeze),
    "warmup": ("Warm the learning rate up", warmup),
    "qk_norm": ("Normalise queries and keys (qk-layernorm)", qk_norm),
    "z_loss": ("Add z-loss on the output logits", z_loss),
    "adam_epsilon": ("Lower Adam's epsilon", adam_epsilon),
    "skip_batch": ("Skip the step, or the batches, around a spike", skip_batch),
}

# How to apply a remedy in the user's framework.
HOW: dict[str, dict[Framework, str]] = {
    "gradient_clipping": {
        Framework.PYTORCH: "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) between backward() and optimizer.step()",
        Framework.LIGHTNING: "Trainer(gradient_clip_val=1.0)",
        Framework.KERAS: "clipnorm=1.0 on the optimizer you use, e.g. keras.optimizers.SGD(learning_rate, clipnorm=1.0)",
        Framework.TRANSFORMERS: "TrainingArguments(max_grad_norm=1.0)",
    },
    "reduce_weight_decay": {
        Framework.KERAS: "a smaller kernel_regularizer factor, or the optimizer's weight_decay",
        Framework.TRANSFORMERS: "TrainingArguments(weight_decay=0.01)",
    },
    "clear_gradients": {
        Framework.PYTORCH: "call optimizer.zero_grad() once per step, before loss.backward() (or right after optimizer.step())",
        Framework.LIGHTNING: "in manual optimisation, call opt.zero_grad() in training_step before self.manual_backward(loss)",
    },
    "train_mode": {
        Framework.PYTORCH: "call model.train() at the start of every training epoch, after validating under model.eval()",
        Framework.LIGHTNING: "do not call self.eval() in training_step; Lightning switches modes around validation itself",
    },
    "add_to_optimizer": {
        Framework.PYTORCH: "build the optimizer after the model is complete, or optimizer.add_param_group({'params': new_layer.parameters()})",
        Framework.LIGHTNING: "return an optimizer over self.parameters() from configure_optimizers, after every layer exists",
    },
    "unfreeze": {
        Framework.PYTORCH: "param.requires_grad_(True) on the layers that must adapt, and give them to the optimizer",
        Framework.LIGHTNING: "unfreeze in a BaseFinetuning callback or before configure_optimizers, and give them to the optimizer",
        Framework.KERAS: "layer.trainable = True on the top layers, then compile again",
        Framework.TRANSFORMERS: "leave requires_grad=True on the layers to adapt (check the names a freezing loop matches)",
    },
    "fix_schedule": {
        Framework.PYTORCH: "call scheduler.step() once per epoch, after the epoch's batches, or size step_size / T_max in batches",
        Framework.LIGHTNING: "interval='step' in configure_optimizers' lr_scheduler dict counts batches: use interval='epoch' or size it in steps",
        Framework.KERAS: "size the LearningRateSchedule's decay_steps in optimizer steps (batches), not epochs",
        Framework.TRANSFORMERS: "size the schedule with max_steps / num_train_epochs; warmup_steps and decay are counted in optimizer steps",
    },
}


def for_finding(finding: Finding, facts: ModelFacts, *, framework: str = "unknown") -> tuple[Remedy, ...]:
    """Remedies for a finding: vanishing through time has remedies of its own."""
    return rank(symptom_key(finding), facts, framework=framework)


# A healthy step changes a layer by about 0.1-1% of its norm (CS231n's rule of thumb is 1e-3); the upper end is the aim
# when a measured step says by how much the learning rate overshoots.
HEALTHY_UPDATE = 1e-2


def sized(finding: Finding, ranked: tuple[Remedy, ...], facts: ModelFacts) -> tuple[Remedy, ...]:
    """``ranked`` with "lower the learning rate" sized from the finding's evidence, where it has some.

    A rising rate that passed what the model trains at (``trained_lr``: a rate it still trained well at) asks
    for a peak about there. Otherwise plain SGD and Adam alike move the weights in proportion to the learning
    rate, so a step that changed a layer by ``u`` times its norm asks for a rate about ``u / HEALTHY_UPDATE``
    times smaller.
    """
    trained = finding.evidence.get("trained_lr")
    if facts.lr is not None and isinstance(trained, float) and 0 < trained < facts.lr:
        why = (
            f"your learning rate is {facts.lr:.3g} and still rising, past the largest this model trains at: cap the peak at "
            f"about {trained:.2g}, a rate it still trained well at, or lower"
        )
        return tuple(Remedy(r.id, r.title, why) if r.id == "lower_lr" else r for r in ranked)
    updates = finding.evidence.get("peak_update")
    if facts.lr is None or not isinstance(updates, dict) or not updates:
        return ranked
    layer = max(updates, key=updates.__getitem__)
    factor = float(updates[layer]) / HEALTHY_UPDATE
    if not factor > 3:
        return ranked
    why = (
        f"your learning rate is {facts.lr:.3g} and one step changed {layer} by {float(updates[layer]):.3g}× its norm, where a "
        f"healthy step changes a layer by about 0.1–1%: try about {facts.lr / factor:.2g} (÷{factor:.3g}), then raise it "
        "while the loss falls, or warm up to it"
    )
    return tuple(Remedy(r.id, r.title, why) if r.id == "lower_lr" else r for r in ranked)


def symptom_key(finding: Finding) -> str:
    """The key ``rank`` takes for a finding: its symptom, or ``symptom:variant`` where one of its declared variants
    applies (``vanishing_gradients:time`` for decay through time, ``early_stagnation:copies`` for units that stay
    copies of each other)."""
    known = declared(finding.symptom)
    return finding.symptom if known is None else known.key(finding.evidence)


def rank(symptom: str, facts: ModelFacts, *, framework: str = "unknown") -> tuple[Remedy, ...]:
    """Remedies for ``symptom`` (a key as ``symptom_key`` gives it) that fit ``facts``, best first.

    Where the framework is known, the reason says how to apply the remedy there.
    """
    scored = []
    known, adapter = declared(symptom.partition(":")[0]), Framework.of(framework)
    for remedy_id, weight in (known.candidates(symptom) if known else {}).items():
        title, rule = REMEDIES[remedy_id]
        verdict = rule(facts)
        if verdict is not None:
            score, why = verdict
            how = HOW.get(remedy_id, {}).get(adapter) if adapter else None
            scored.append((score * weight, Remedy(remedy_id, title, f"{why}; in {adapter}: {how}" if how else why)))
    scored.sort(key=lambda pair: -pair[0])
    return tuple(remedy for _, remedy in scored)


__all__ = ["REMEDIES", "for_finding", "rank", "sized", "symptom_key"]

"""``divergence_forecast``, ``loss_spike`` and their precursors on a real tiny character-level GPT."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradwatch import StepStats
from gradwatch.integrations.pytorch import watch

TEXT = "".join(f"{word} {i % 7} sees {word[::-1]}; " for i, word in enumerate(("gradient", "spike", "layer", "logit", "warmup") * 40))
CHARS = sorted(set(TEXT))
IDS = torch.tensor([CHARS.index(c) for c in TEXT])


class Attention(nn.Module):
    """Causal self-attention written out (``softmax`` over ``[batch, heads, query, key]``), or through SDPA."""

    def __init__(self, width: int, heads: int, *, fused: bool) -> None:
        super().__init__()
        self.heads, self.fused = heads, fused
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in self.qkv(x).split(width, dim=2))
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            logits = logits.masked_fill(~torch.ones(length, length, dtype=torch.bool).tril(), float("-inf"))
            y = logits.softmax(-1) @ v
        return self.out(y.transpose(1, 2).reshape(batch, length, width))


class TinyGPT(nn.Module):
    def __init__(self, *, width: int = 32, heads: int = 2, context: int = 32, fused: bool = False) -> None:
        super().__init__()
        self.token, self.position = nn.Embedding(len(CHARS), width), nn.Embedding(context, width)
        self.norm1, self.norm2, self.norm_out = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads, fused=fused)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.head = nn.Linear(width, len(CHARS))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token(tokens) + self.position(torch.arange(tokens.shape[1]))
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return self.head(self.norm_out(x))


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, every: int) -> tuple[list[float], object]:
    """Train on batches of 8 windows of 32 characters under ``watch``; stop at the first non-finite loss."""
    generator = torch.Generator().manual_seed(0)
    losses: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watcher = watch(model, optimizer, every_n_steps=every, print_report=False)
        for _ in range(steps):
            starts = torch.randint(0, len(IDS) - 33, (8,), generator=generator)
            x = torch.stack([IDS[s : s + 32] for s in starts])
            y = torch.stack([IDS[s + 1 : s + 33] for s in starts])
            loss = F.cross_entropy(model(x).reshape(-1, len(CHARS)), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            watcher.step(loss)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                break
        report = watcher.close()
    return losses, report


def test_a_run_that_diverges_at_a_high_learning_rate_is_forecast_before_its_nan() -> None:
    """SGD whose learning rate grows 5% a step trains well for 40 steps, then blows up to NaN."""
    torch.manual_seed(0)
    model = TinyGPT()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.05**step)
    optimizer.register_step_post_hook(lambda *_: schedule.step())
    losses, report = train(model, optimizer, steps=100, every=2)
    nan_step = len(losses) - 1
    assert not math.isfinite(losses[-1]), "the run was meant to diverge to NaN"
    found = {f.symptom: f for f in report.findings}  # type: ignore[attr-defined]
    forecast = found["divergence_forecast"]
    raised = forecast.first_step
    assert raised < nan_step - 5 and forecast.evidence["raised_step"] == raised and forecast.severity == "warning"
    blown_up = next(step for step, loss in enumerate(losses) if not loss < 10 * min(losses[: step + 1]))
    assert raised < blown_up  # raised while the loss was still within reach of its level
    lead = forecast.evidence["lead_steps"]
    assert lead > 0 and forecast.evidence["diverged_step"] == raised + lead and f"{lead} steps ahead" in forecast.message
    assert found["nonfinite"].severity == "critical"
    spike = found["loss_spike"]  # the blow-up is a divergence, not a transient spike: said, and left to the alarms above
    assert spike.severity == "info" and spike.evidence["diverged"] and "diverges rather than spikes" in spike.message


def test_a_healthy_run_raises_no_spike_and_no_forecast_and_the_precursors_are_measured() -> None:
    for fused in (False, True):
        torch.manual_seed(1)
        model = TinyGPT(fused=fused)
        losses, report = train(model, torch.optim.AdamW(model.parameters(), lr=3e-3), steps=60, every=4)
        assert losses[-1] < 0.7 * losses[0]
        symptoms = {f.symptom for f in report.findings}  # type: ignore[attr-defined]
        assert not symptoms & {"loss_spike", "divergence_forecast"}, symptoms


def test_the_sampled_step_holds_the_attention_the_log_partition_and_adams_moments() -> None:
    from gradwatch.integrations.torch_stats import TorchCollector

    torch.manual_seed(2)
    model = TinyGPT()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    collector = TorchCollector(model)
    collector.probes.attach()
    generator = torch.Generator().manual_seed(0)
    for step in range(3):
        collector.probes.sampling = step == 2
        starts = torch.randint(0, len(IDS) - 33, (8,), generator=generator)
        x = torch.stack([IDS[s : s + 32] for s in starts])
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, len(CHARS)), IDS[starts[:, None] + torch.arange(1, 33)].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        if step == 2:
            collector.capture_gradients()
            collector.capture_moments([optimizer])
            moment = optimizer.state[model.token.weight]["exp_avg_sq"].clone()  # before the step, after 2 steps
            with torch.no_grad():  # the attention logits of this forward, as the model computes them
                h = model.norm1(model.token(x) + model.position(torch.arange(32)))
                q, k, _ = (t.view(8, 32, 2, -1).transpose(1, 2) for t in model.attn.qkv(h).split(32, dim=2))
                scores = (q @ k.transpose(-2, -1) / math.sqrt(16)).masked_fill(~torch.ones(32, 32, dtype=torch.bool).tril(), float("-inf"))
        optimizer.step()
    collector.capture_updates()
    stats = collector.flush(2)
    collector.probes.detach()
    assert stats.output_log_partition is not None
    assert math.isclose(stats.output_log_partition, float(torch.logsumexp(logits.detach(), -1).mean()), rel_tol=1e-5)
    assert stats.attention_layer == "attn" and stats.attention_logit_max is not None
    assert math.isclose(stats.attention_logit_max, float(scores.amax()), rel_tol=1e-5)
    assert stats.attention_head == int(scores.amax(dim=(0, 2, 3)).argmax())
    assert stats.attention_entropy_min is not None and 0 < stats.attention_entropy_min < math.log(32)
    assert stats.adam_eps == 1e-7
    embed = next(layer for layer in stats.layers if layer.name == "token")
    assert embed.size == model.token.weight.numel() and embed.moment_rms is not None
    assert math.isclose(embed.moment_rms, math.sqrt(float(moment.mean()) / (1 - 0.999**2)), rel_tol=1e-4)


class Mixer(Attention):
    """The same attention under a name that does not say so: found by its softmax alone."""


class Recorder(nn.Module):
    """Notes, at every forward, whether a torch function mode (the attention probe) is watching it."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.watched.append(bool(torch.overrides._get_current_function_mode_stack()))
        return x


def test_attention_is_looked_for_on_every_sampled_step_only_where_the_first_one_found_it() -> None:
    from gradwatch.integrations.torch_stats import TorchCollector

    for attention in (True, False):
        torch.manual_seed(3)
        model = TinyGPT()
        if not attention:
            model.attn = nn.Identity()  # type: ignore[assignment]
        else:
            model.attn.__class__ = Mixer  # no module named attention: the softmax alone says it
        model.recorder = Recorder()
        model.head = nn.Sequential(model.recorder, model.head)
        collector = TorchCollector(model)
        collector.probes.attach()
        found = []
        for step in range(4):
            collector.probes.sampling = step % 2 == 0
            logits = model(IDS[:32].view(1, 32))
            logits.logsumexp(-1).mean().backward()
            if step % 2 == 0:
                collector.capture_gradients()
                stats = collector.flush(step)
                found.append((stats.attention_logit_max is not None, stats.output_log_partition is not None))
        collector.probes.detach()
        assert found == [(attention, True)] * 2
        assert model.recorder.watched == [True, False, attention, False]


def recorded(watcher: Any) -> list[StepStats]:
    """Every sample ``watcher``'s session observes, from now on."""
    seen: list[StepStats] = []
    observe = watcher.session.observe
    watcher.session.observe = lambda stats: seen.append(stats) or observe(stats)
    return seen


def next_char_loss(model: nn.Module, generator: torch.Generator) -> torch.Tensor:
    """The model's next-character loss on a batch of 8 random windows of 32 characters."""
    starts = torch.randint(0, len(IDS) - 33, (8,), generator=generator)
    x = torch.stack([IDS[s : s + 32] for s in starts])
    return F.cross_entropy(model(x).reshape(-1, len(CHARS)), IDS[starts[:, None] + torch.arange(1, 33)].reshape(-1))


@torch.no_grad()
def total_grad_norm(model: nn.Module) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))


def test_every_steps_gradient_norm_reaches_the_next_sample_without_a_host_read_of_its_own(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(4)
    model = TinyGPT()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # (Adam reads its step count to the host)
    generator = torch.Generator().manual_seed(0)
    totals, reads = [], []
    for name in ("tolist", "item"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda t, _real=real, _name=name: reads.append(_name) or _real(t))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watcher = watch(model, optimizer, every_n_steps=5, print_report=False)
        seen = recorded(watcher)
        for step in range(12):
            loss = next_char_loss(model, generator)
            optimizer.zero_grad()
            loss.backward()
            totals.append(total_grad_norm(model))
            reads.clear()
            optimizer.step()
            watcher.step(loss)
            assert reads == (["tolist"] if watcher.session.should_sample(step) else []), f"step {step}: host reads {reads}"
        watcher.close()
    assert [s.step for s in seen] == [0, 1, 2, 4, 5, 10]
    previous = -1
    for stats in seen:
        expected = totals[previous + 1 : stats.step + 1]  # every step since the previous sample, this one last
        assert len(stats.step_grad_norms) == len(expected), (stats.step, stats.step_grad_norms)
        assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(stats.step_grad_norms, expected)), (stats.step_grad_norms, expected)
        previous = stats.step


@pytest.mark.parametrize(("amp", "passes"), [(False, 1), (True, 1), (False, 2)], ids=["fp32", "grad_scaler", "accumulation"])
def test_every_steps_norm_is_the_one_before_the_loop_clips_it(amp: bool, passes: int) -> None:
    torch.manual_seed(6)
    model = TinyGPT()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3) if amp else None  # the scale moves
    generator = torch.Generator().manual_seed(0)
    pre_clip = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watcher = watch(model, optimizer, every_n_steps=5, print_report=False)
        seen = recorded(watcher)
        for step in range(12):
            optimizer.zero_grad()
            for _ in range(passes):
                loss = next_char_loss(model, generator)
                (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(optimizer)
            limit = 1e9 if step < 3 else 1e-3  # the first steps teach the AMP scale; the rest are all clipped
            pre_clip.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), limit)))
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            watcher.step(loss)
        watcher.close()
    read = [n for stats in seen for n in stats.step_grad_norms]
    assert len(read) == 11  # the last step (11) is not sampled
    assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(read, pre_clip)), (read, pre_clip)
    unclipped = [(s.grad_norm_unclipped, pre_clip[s.step]) for s in seen]
    assert all(a is not None and math.isclose(a, b, rel_tol=1e-4) for a, b in unclipped), unclipped
    assert not scaler or scaler.get_scale() != 2.0**10


def test_a_model_with_attention_and_layer_norms_is_known_as_a_normalised_residual_model() -> None:
    from gradwatch.integrations.torch_facts import model_facts

    facts = model_facts(TinyGPT())  # its std-0.02-style init is by design: never blamed for a divergence
    assert facts.residual is True and facts.normalization
    assert model_facts(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))).residual is False


def test_a_large_gradients_per_step_norm_is_read_on_blocks_and_stays_within_a_few_percent() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 4))  # 262,144 weights: read on every 13th block
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    totals = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watcher = watch(model, optimizer, every_n_steps=10, print_report=False)
        seen = recorded(watcher)
        for _ in range(11):
            loss = F.cross_entropy(model(torch.randn(64, 512)), torch.randint(0, 4, (64,)))
            optimizer.zero_grad()
            loss.backward()
            totals.append(total_grad_norm(model))
            optimizer.step()
            watcher.step(loss)
        watcher.close()
    assert watcher.cycle.collector._update_stride[0] >= 8  # the large weight is read on blocks
    estimates = [n for stats in seen for n in stats.step_grad_norms]
    assert len(estimates) == 11
    errors = [abs(a / b - 1) for a, b in zip(estimates, totals)]
    assert max(errors) < 0.03 and 0 < max(errors), errors  # unsampled steps are estimates, not exact reads

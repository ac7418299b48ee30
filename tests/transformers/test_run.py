"""``gradwatch run`` on an unmodified Hugging Face Trainer script: the drop-in's findings, the same training bit for bit, its exit code."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from tests.torch.test_run import finished, lines, script, started

SCRIPT = """
import hashlib
import sys
import torch
import transformers

torch.set_num_threads(1)


class Copies(torch.utils.data.Dataset):
    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 64, (128, 4), generator=gen).repeat(1, 4)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


torch.manual_seed(0)
model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2))
args = transformers.TrainingArguments(
    output_dir="out", max_steps=30, per_device_train_batch_size=16, learning_rate=30.0, max_grad_norm=0.0, optim="sgd",
    logging_steps=5, report_to=[], use_cpu=True, save_strategy="no", seed=0, lr_scheduler_type="constant", disable_tqdm=True,
)
trainer = transformers.Trainer(model=model, args=args, train_dataset=Copies()CALLBACKS)
trainer.train()
print("losses", [float(e["loss"]).hex() for e in trainer.state.log_history if "loss" in e])
digest = hashlib.sha256()
for tensor in model.state_dict().values():
    digest.update(tensor.detach().contiguous().numpy().tobytes())
print("weights", digest.hexdigest())
sys.exit(6)
"""
DROP_IN = ", callbacks=[GradWatchCallback(summary_path='drop-in.json')]"


def findings(path):
    return sorted((f["symptom"], f["severity"]) for f in json.loads(path.read_text())["findings"])


def test_an_unmodified_trainer_gets_the_drop_ins_findings_and_trains_bit_for_bit_as_without(tmp_path):
    run, own = tmp_path / "run", tmp_path / "own"  # two processes, not three: the framework's import is most of the time
    script(run, SCRIPT.replace("CALLBACKS", ""))
    script(own, "from gradwatch.integrations.transformers import GradWatchCallback\n" + SCRIPT.replace("CALLBACKS", DROP_IN))
    runs = [started(run, "-m", "gradwatch.cli", "run", "train.py"), started(own, "train.py")]
    watched, drop_in = (finished(r) for r in runs)
    assert (watched.returncode, drop_in.returncode) == (6, 6), watched.stderr
    for prefix in ("losses", "weights"):  # the drop-in trains as the script alone does (its own tests): so does gradwatch run
        assert lines(watched.stdout, prefix) == lines(drop_in.stdout, prefix) != [], prefix
    summary = json.loads((run / "gradwatch-train.json").read_text())
    assert (summary["framework"], summary["steps"]) == ("transformers", 30)
    found = findings(run / "gradwatch-train.json")
    assert found == findings(own / "drop-in.json")
    assert {"exploding_gradients", "nonfinite"} & {symptom for symptom, _ in found}, found
    assert watched.stderr.count("gradwatch · ") == 1

"""Hugging Face Trainer: a tiny GPT-2 built from a config (nothing downloaded), diagnosed by one callback.

python examples/transformers_gpt2.py --steps 60
python examples/transformers_gpt2.py --steps 60 --lr 30 --optim sgd --max-grad-norm 0   # a run that blows up
torchrun --standalone --nproc-per-node 2 examples/transformers_gpt2.py --steps 60                     # DDP on 2 CPU processes
"""

import argparse

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from gradwatch.integrations.transformers import GradWatchCallback

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=60)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--optim", default="adamw_torch")
parser.add_argument("--max-grad-norm", type=float, default=1.0)
parser.add_argument("--summary", default="gradwatch-transformers.json")
args = parser.parse_args()

torch.set_num_threads(1)
torch.manual_seed(0)
vocab, length = 64, 16
motifs = torch.randint(0, vocab, (512, 4))
ids = motifs.repeat(1, length // 4)  # sequences that repeat a random 4-token motif
dataset = [{"input_ids": row, "labels": row} for row in ids]
model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=length, n_embd=32, n_layer=2, n_head=2))

training = TrainingArguments(
    output_dir="gradwatch-transformers-out",
    max_steps=args.steps,
    per_device_train_batch_size=16,
    learning_rate=args.lr,
    optim=args.optim,
    max_grad_norm=args.max_grad_norm,
    logging_steps=10,
    report_to=[],
    use_cpu=True,
    save_strategy="no",
    disable_tqdm=True,
)
trainer = Trainer(model=model, args=training, train_dataset=dataset, callbacks=[GradWatchCallback(summary_path=args.summary)])
trainer.train()  # gradwatch/... scalars appear in the Trainer's logs; the report prints once, on the main process

#!/usr/bin/env python3
"""PyTorch reference trajectories for Ridgeline's optimizer tests.

What it computes
----------------
One tiny least-squares problem, identical for every case, in float32:

    w (3x2) = [[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]]
    b (3)   = [0.05, -0.05, 0.1]
    x (4x2) = [[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7], [2.0, -1.0]]
    y (4x3) = [[0.5, -1.0, 0.2], [1.0, 0.0, -0.3], [-0.2, 0.4, 0.9], [0.0, 1.5, -1.0]]
    loss    = mean((x @ w.T + b - y) ** 2)          (mean over all 12 entries)

Each case runs 6 steps. Before step k (k = 0..5) the step's lr (and momentum or
beta1 where the case schedules them) is written into the param group, then
zero_grad(), loss.backward(), opt.step().  The loss recorded for step k is the
one computed *before* that step's update; W and B are the parameters after all
6 steps (W row-major, 3x2).

Every torch.optim case is run with foreach=False (the printed numbers) and is
cross-checked against the default (foreach=None, which on CPU resolves to the
same single-tensor loop: must be bit-identical, else the script exits 1) and
against foreach=True (the multi-tensor path; its max abs difference is printed
as a comment, it may differ in the last ulp).

`sgd_seed_form_lr_change` is not torch.optim: it is the "seed" momentum form
    v <- mu*v - lr*grad ;  w <- w + v        (v starts at 0, mu = 0.9)
written by hand with torch tensors (autograd only for the gradient).
`sgd_pytorch_form_lr_change` is torch.optim.SGD(momentum=0.9), i.e.
    buf <- mu*buf + grad (buf = grad on the first step) ;  w <- w - lr*buf
with the same lr schedule.  The two agree while lr is constant (steps 0-1, so the
first three losses match) and diverge once lr changes.

Output
------
Rust source on stdout: a header comment with the torch version, then for each
case a block

    // <case>
    const <CASE>_LOSSES: [f32; 6] = [...];
    const <CASE>_W: [f32; 6] = [...];
    const <CASE>_B: [f32; 3] = [...];

Floats are printed with 9 significant digits (enough to round-trip an f32).
Clippy's `excessive_precision` lint may fire on such literals; put
`#![allow(clippy::excessive_precision)]` on the test module that includes them.

Rerun
-----
    pip install torch==2.15.0 numpy
    python3 worker/tests/reference/optim_reference.py \
        > worker/tests/reference/optim_reference.out

(from the repository root).  The output is deterministic: tiny tensors, CPU,
one thread.
"""

import sys

import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

DTYPE = torch.float32
STEPS = 6

W0 = [[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]]
B0 = [0.05, -0.05, 0.1]
X = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7], [2.0, -1.0]], dtype=DTYPE)
Y = torch.tensor(
    [[0.5, -1.0, 0.2], [1.0, 0.0, -0.3], [-0.2, 0.4, 0.9], [0.0, 1.5, -1.0]],
    dtype=DTYPE,
)


def fresh_params():
    w = torch.tensor(W0, dtype=DTYPE, requires_grad=True)
    b = torch.tensor(B0, dtype=DTYPE, requires_grad=True)
    return w, b


def loss_fn(w, b):
    return ((X @ w.T + b - Y) ** 2).mean()


def run_torch(make_opt, lrs, momenta=None, beta1s=None, foreach=False):
    """Run 6 steps of a torch.optim optimizer; return (losses, w, b)."""
    w, b = fresh_params()
    opt = make_opt([w, b], foreach)
    losses = []
    for k in range(STEPS):
        for g in opt.param_groups:
            g["lr"] = lrs[k]
            if momenta is not None:
                g["momentum"] = momenta[k]
            if beta1s is not None:
                g["betas"] = (beta1s[k], g["betas"][1])
        opt.zero_grad()
        loss = loss_fn(w, b)
        loss.backward()
        losses.append(loss.detach().clone())
        opt.step()
    return torch.stack(losses), w.detach().clone(), b.detach().clone()


def run_seed_form(lrs, mu):
    """Hand-written momentum form v <- mu*v - lr*grad; p <- p + v."""
    w, b = fresh_params()
    vel = [torch.zeros_like(w), torch.zeros_like(b)]
    losses = []
    for k in range(STEPS):
        for p in (w, b):
            p.grad = None
        loss = loss_fn(w, b)
        loss.backward()
        losses.append(loss.detach().clone())
        with torch.no_grad():
            for p, v in zip((w, b), vel):
                v.copy_(mu * v - lrs[k] * p.grad)
                p.add_(v)
    return torch.stack(losses), w.detach().clone(), b.detach().clone()


def const(v):
    return [v] * STEPS


LR_CHANGE_SGD = [0.1, 0.1, 0.05, 0.05, 0.2, 0.2]

# name -> (optimizer factory, lr list, momentum list or None, beta1 list or None)
TORCH_CASES = [
    ("sgd_const",
     lambda ps, fe: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=fe),
     const(0.1), None, None),
    ("sgd_momentum_ramp",
     lambda ps, fe: torch.optim.SGD(ps, lr=0.1, momentum=0.1, foreach=fe),
     const(0.1), [0.1, 0.2, 0.4, 0.6, 0.8, 0.9], None),
    ("sgd_pytorch_form_lr_change",
     lambda ps, fe: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=fe),
     LR_CHANGE_SGD, None, None),
    ("nesterov",
     lambda ps, fe: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, foreach=fe),
     const(0.1), None, None),
    ("sgd_weight_decay",
     lambda ps, fe: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01, foreach=fe),
     const(0.1), None, None),
    ("adam_lr_change",
     lambda ps, fe: torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8, foreach=fe),
     [0.01, 0.01, 0.02, 0.02, 0.005, 0.005], None, None),
    ("adam_l2",
     lambda ps, fe: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1, foreach=fe),
     const(0.01), None, None),
    ("adam_beta1_ramp",
     lambda ps, fe: torch.optim.Adam(ps, lr=0.01, betas=(0.5, 0.999), foreach=fe),
     const(0.01), None, [0.5, 0.6, 0.7, 0.8, 0.9, 0.9]),
    ("adamw",
     lambda ps, fe: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, foreach=fe),
     const(0.01), None, None),
    ("rmsprop",
     lambda ps, fe: torch.optim.RMSprop(ps, lr=0.01, alpha=0.99, eps=1e-8, momentum=0, foreach=fe),
     const(0.01), None, None),
    ("rmsprop_momentum",
     lambda ps, fe: torch.optim.RMSprop(ps, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.9, foreach=fe),
     const(0.01), None, None),
    ("adagrad",
     lambda ps, fe: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.01, eps=1e-10, foreach=fe),
     const(0.1), None, None),
    ("adagrad_weight_decay",
     lambda ps, fe: torch.optim.Adagrad(ps, lr=0.1, weight_decay=0.05, foreach=fe),
     const(0.1), None, None),
]

# Order of the printed blocks (matches the brief's case numbering).
ORDER = [
    "sgd_const",
    "sgd_momentum_ramp",
    "sgd_seed_form_lr_change",
    "sgd_pytorch_form_lr_change",
    "nesterov",
    "sgd_weight_decay",
    "adam_lr_change",
    "adam_l2",
    "adam_beta1_ramp",
    "adamw",
    "rmsprop",
    "rmsprop_momentum",
    "adagrad",
    "adagrad_weight_decay",
]


def fmt(v):
    """9 significant digits, Rust-style exponent: 1.23456789e0, -5.00000000e-2."""
    mant, exp = format(float(v), ".8e").split("e")
    return f"{mant}e{int(exp)}"


def rust_array(name, t):
    vals = t.reshape(-1).tolist()
    return f"const {name}: [f32; {len(vals)}] = [{', '.join(fmt(v) for v in vals)}];"


def max_abs_diff(r1, r2):
    return max((a - b).abs().max().item() for a, b in zip(r1, r2))


def bit_equal(r1, r2):
    return all(torch.equal(a, b) for a, b in zip(r1, r2))


def main():
    results = {}
    notes = []
    failed = False
    for name, make, lrs, momenta, beta1s in TORCH_CASES:
        ref = run_torch(make, lrs, momenta, beta1s, foreach=False)
        dflt = run_torch(make, lrs, momenta, beta1s, foreach=None)
        multi = run_torch(make, lrs, momenta, beta1s, foreach=True)
        results[name] = ref
        same_default = bit_equal(ref, dflt)
        if not same_default:
            failed = True
            print(f"ERROR: {name}: default (foreach=None) differs from foreach=False "
                  f"(max abs diff {max_abs_diff(ref, dflt):.3e})", file=sys.stderr)
        d = max_abs_diff(ref, multi)
        notes.append(
            f"//   {name}: default {'bit-identical' if same_default else 'DIFFERS'}; "
            f"foreach=True max|diff| = {d:.3e}"
            + (" (bit-identical)" if bit_equal(ref, multi) else ""))

    seed = run_seed_form(LR_CHANGE_SGD, 0.9)
    results["sgd_seed_form_lr_change"] = seed

    # The seed form and PyTorch's form must agree while lr is constant (first
    # two updates, so the first three losses) and differ after the lr change.
    torch_form = results["sgd_pytorch_form_lr_change"]
    early = (seed[0][:3] - torch_form[0][:3]).abs().max().item()
    late_w = (seed[1] - torch_form[1]).abs().max().item()
    if not torch.allclose(seed[0][:3], torch_form[0][:3], rtol=1e-6, atol=1e-7):
        failed = True
        print(f"ERROR: seed and torch SGD forms disagree at constant lr ({early:.3e})",
              file=sys.stderr)
    if late_w < 1e-4:
        failed = True
        print("ERROR: seed and torch SGD forms unexpectedly agree after the lr change",
              file=sys.stderr)

    print(f"// Generated by worker/tests/reference/optim_reference.py with torch {torch.__version__}")
    print("// float32; loss = mean((x @ w.T + b - y)^2); 6 steps; LOSSES[k] is computed")
    print("// before update k; W (row-major 3x2) and B are the parameters after 6 steps.")
    print("// torch.optim cases use foreach=False. Cross-checks:")
    for n in notes:
        print(n)
    print(f"// seed form vs pytorch form (lr 0.1,0.1,0.05,0.05,0.2,0.2): losses 0-2 max|diff| = "
          f"{early:.3e}; final W max|diff| = {late_w:.3e}")
    for name in ORDER:
        losses, w, b = results[name]
        up = name.upper()
        print()
        print(f"// {name}")
        print(rust_array(f"{up}_LOSSES", losses))
        print(rust_array(f"{up}_W", w))
        print(rust_array(f"{up}_B", b))

    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

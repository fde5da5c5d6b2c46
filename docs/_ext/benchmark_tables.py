"""Sphinx extension: render the benchmark results and the model cards as reST tables.

The benchmark scripts write JSON (``benchmarks/results``) and training writes a model card
beside each shipped weights file (``deepinv_dynnets/weights/*.json``); when a build starts,
this extension turns them into the ``docs/generated/*.rst`` files that the pages include,
so the docs quote what was measured.
"""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]


def _list_table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A reST list-table with a header row."""
    lines = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines += [f"   * - {row[0]}", *[f"     - {cell}" for cell in row[1:]]]
    return lines + [""]


def _sympflow_tables(data: dict) -> list[str]:
    """``benchmarks/results/sympflow.json`` (issues 16 and 18) as reST tables."""
    load = ", ".join(f"{v:.1f}" for v in data["load_average_start"])
    load_end = ", ".join(f"{v:.1f}" for v in data["load_average_end"])
    T, T_long = data["T"], data["T_long"]
    lines = [
        f"Command ``{data['command']}``; {data['cpu']} ({data['cpu_count']} cores), "
        f"{data['threads']} thread unless said, load average {load} (1, 5, 15 min) at the "
        f"start and {load_end} at the end of the run (other jobs shared the cores, so the "
        f"wall times are inflated; the CPU times less so); {data['wall_s'] / 60:.1f} min in "
        f"all. Accuracy over {data['n_ics']} initial conditions sampled in each system's "
        "domain.",
        "",
    ]
    systems = data["systems"]
    times = next(iter(systems.values()))["with matching"]["times"]
    rows = []
    for name, entry in systems.items():
        for variant in ("with matching", "without matching", *entry.get("variants", {})):
            if variant not in entry:
                continue
            e, esc = entry[variant], entry["escapes"][variant]
            rows.append(
                [name, variant]
                + [f"{v:.2e}" for v in e["relative_state_error"]]
                + [f"{v:.2e}" for v in e["energy_error"]]
                + [
                    f"{e['energy_error_median'][-1]:.2e}",
                    f"{esc['left_region']} / {esc['ran_off']}",
                ]
            )
    lines += _list_table(
        "Accuracy against the reference solution (dopri5, rtol = atol = 1e-10)",
        ["system", "variant"]
        + [f"rel. state error t={t:g}" for t in times]
        + [f"mean abs energy error t={t:g}" for t in times]
        + [
            f"median abs energy error t={T_long:g}",
            f"orbits escaped by t={T_long:g} (left the well, or non-finite) / ran off "
            f"(norm > {data['run_off_norm']:g})",
        ],
        rows,
    )
    rows = []
    for name, entry in systems.items():
        acc = entry["flow_accuracy_at_T"]
        for precision in ("float32", "float64"):
            r = entry[f"rollout_{precision}"]
            rows.append(
                [name, f"SympFlow, {precision}", f"{r['flow_s']:.2f}", f"{r['flow_cpu_s']:.2f}",
                 f"{r['compositions']} ({r['potential_gradients']} potential gradients)", "",
                 f"{acc[precision]['relative_state_error']:.2e}",
                 f"{acc[precision]['energy_error']:.2e}"]
            )  # fmt: skip
        for variant, timed in entry.get("variants", {}).items():
            for precision in ("float32", "float64"):
                r = timed[f"rollout_{precision}"]
                rows.append(
                    [name, f"``{variant}``, {precision}", f"{r['flow_s']:.2f}",
                     f"{r['flow_cpu_s']:.2f}", f"{r['compositions']}",
                     f"{r['speedup']:.1f} ({precision})", "", ""]
                )  # fmt: skip
        r = entry["rollout_float64"]
        tight = next(s for s in entry["dopri5_scan"] if s.get("rtol") == 1e-8)
        rows.append(
            [name, "dopri5, rtol 1e-8", f"{r['odeint_s']:.2f}", f"{r['odeint_cpu_s']:.2f}",
             f"{r['odeint_evaluations']}",
             f"{entry['rollout_float32']['speedup']:.1f} / {r['speedup']:.1f}",
             f"{tight['relative_state_error'][-1]:.2e}", f"{tight['energy_error'][-1]:.2e}"]
        )  # fmt: skip
        m = entry["dopri5_matched"]
        if m is not None:
            rows.append(
                [name, f"dopri5, rtol {m['rtol']:g} (matched accuracy)", f"{m['odeint_s']:.2f}",
                 f"{m['odeint_cpu_s']:.2f}", f"{m['odeint_evaluations']}",
                 f"{m['speedup_float32']:.1f} / {m['speedup_float64']:.1f}",
                 f"{m['relative_state_error_at_T']:.2e}", f"{m['energy_error_at_T']:.2e}"]
            )  # fmt: skip
    lines += _list_table(
        f"Rollout of {data['n_rollout']} states to T = {T:g}, one thread, same run "
        "(dopri5 in float64, atol 1e-9)",
        ["system", "solver", "wall time (s)", "CPU time (s)",
         "evaluations (each on the whole batch)", "speed-up of the flow (float32 / float64)",
         f"mean rel. state error t={T:g}", f"mean abs energy error t={T:g}"],
        rows,
    )  # fmt: skip
    lines += [
        f"Matched accuracy: {data['matched_rule']}. Accuracy columns are measured on the "
        "accuracy initial conditions, the times on the rollout states.",
        "",
    ]
    rows = []
    for name, entry in systems.items():
        for r in entry["dopri5_scan"]:
            if "failed" in r:
                rows.append([name, f"{r['rtol']:g}", "failed", "", "", "", ""])
                continue
            rows.append(
                [name, f"{r['rtol']:g}", f"{r['relative_state_error'][1]:.2e}",
                 f"{r['relative_state_error'][-1]:.2e}", f"{r['energy_error'][-1]:.2e}",
                 f"{r['odeint_evaluations']}", f"{r['odeint_s']:.2f}"]
            )  # fmt: skip
    lines += _list_table(
        f"dopri5 on the {data['n_ics']} accuracy initial conditions to t = {T:g}",
        ["system", "rtol", "rel. state error t=10", f"rel. state error t={T:g}",
         f"mean abs energy error t={T:g}", "evaluations", "wall time (s)"],
        rows,
    )  # fmt: skip
    rows = []
    for name, entry in systems.items():
        for precision in ("float32", "float64"):
            c, r = entry["threads_check"][precision], entry["long_rollout"][precision]
            rows.append(
                [name, precision, f"{c['one_thread_s']:.2f}",
                 f"{c['default_threads_busy_core_s']:.2f}", f"{c['one_thread_busy_core_s']:.2f}",
                 f"{c['ratio']:.2f}", f"{c['ratio_same_load']:.2f}",
                 f"{r['flow_s']:.2f} ({r['flow_cpu_s']:.2f})"]
            )  # fmt: skip
        long, dt = entry["long_rollout"]["float32"], entry["config"]["dt"]
    lines += _list_table(
        f"Threads: the rollout above (median of {c['repeats']}), with "
        f"{data['default_threads']} threads (torch's default here) while a busy-loop "
        f"subprocess keeps a core busy; and {long['states']} states to t = "
        f"{long['compositions'] * dt:g} (steps of Delta t = {dt:g}), one thread",
        ["system", "flow dtype", "1 thread (s)", "default threads, busy core (s)",
         "1 thread, busy core (s)", "default + busy over 1 thread",
         "default + busy over 1 thread + busy (same load)",
         "long rollout, wall (CPU) s"],
        rows,
    )  # fmt: skip
    for name, targets in data["targets"].items():
        rows = [
            [t["target"], f"{'<=' if t['kind'] == 'max' else '>='} {t['bound']:.3g}{t['unit']}",
             f"{t['measured']:.3g}{t['unit']}", "PASS" if t["passed"] else "MISSED",
             f"{t['gap']:.3g}"]
            for t in targets
        ]  # fmt: skip
        lines += _list_table(
            f"Targets of issue 16, {name} (gap: measured over bound, or bound over measured "
            "for a lower bound; above 1 misses)",
            ["target", "bound", "measured", "verdict", "gap"],
            rows,
        )
    rows = [
        [name, f"{e['train_step_s']:.4f}", f"{e['train_step_s_reference_architecture']:.4f}"]
        for name, e in systems.items()
    ]
    lines += _list_table(
        "Training step, 700 points with matching, one thread",
        ["system", "shipped architecture (s)", "reference 3x10 architecture (s)"],
        rows,
    )
    return lines


def _benchmark_tables() -> None:
    """Render the benchmark scripts' JSON as reST tables, so the docs quote what they measured."""
    results = DOCS.parent / "benchmarks" / "results" / "sympflow.json"
    out = DOCS / "generated"
    out.mkdir(exist_ok=True)
    if not results.is_file():
        lines = ["*No benchmark results found: run* ``python benchmarks/sympflow.py``."]
    else:
        lines = _sympflow_tables(json.loads(results.read_text()))
    (out / "benchmarks_sympflow.rst").write_text("\n".join(lines) + "\n")
    supervised = _sympflow_supervised_tables(results.parent)
    (out / "benchmarks_sympflow_supervised.rst").write_text("\n".join(supervised) + "\n")


def _sympflow_supervised_tables(results: Path) -> list[str]:
    """``sympflow_supervised_<steps>.json``: one table per training budget, fewest steps first."""
    lines = []

    def order(path: Path) -> tuple[int, int]:
        data = json.loads(path.read_text())
        return data.get("holdout", 0), data["steps"]

    paths = sorted(results.glob("sympflow_supervised_*.json"), key=order)
    for path in paths:
        data = json.loads(path.read_text())
        n, held = data["n_ics"], data.get("holdout", 0)
        header = ["model", "train s", *[f"state t={s}" for s in ("1", "10", "100")]]
        header += [f"energy t={s} (mean / median)" for s in ("1", "10", "100", "1000")]
        rows = []
        for label, r in data["results"].items():
            row = [label, f"{data['training'][label]['wall_time_s']:.0f}"]
            if held:
                row[0] += f" (step {data['training'][label]['best_step']})"
            row += [f"{v:.1e}" for v in r["state_error"].values()]
            row += [
                f"{r['energy_error'][s]:.1e} / {r['energy_error_median'][s]:.1e}"
                for s in r["energy_error"]
            ]
            rows.append(row + [f"{r['left_well']}/{n}"])
        stopping = f", {held} trajectories held out for early stopping" if held else ""
        title = (
            f"{data['steps']} Adam steps per model{stopping}, {n} fresh initial conditions "
            f"(``{path.name}``, {data['cpu']}, {data['threads']} thread)"
        )
        lines += _list_table(title, header + ["left the well"], rows)
        verdicts = [
            f"{t['target']}: {t['measured']:.3g} against {t['bound']:.3g}, "
            + ("**met**" if t["passed"] else "**missed**")
            for t in data["targets"]
        ]
        lines += [f"- {v}" for v in verdicts] + [""]
    return lines or ["*No results found: run* ``python benchmarks/sympflow_supervised.py``."]


def _model_cards() -> None:
    """Render the training records shipped next to the weights as model-card tables."""
    here = DOCS
    weights = here.parent / "deepinv_dynnets" / "weights"
    lines = []
    for card in sorted(weights.glob("sympflow_*.json")):
        data = json.loads(card.read_text())
        s = data["settings"]
        name = card.stem.removeprefix("sympflow_").replace("_", "-")
        title = f'``SympFlow.from_pretrained("{name}")``'
        lines += [title, "~" * len(title), ""]
        lines += [
            f"- **system**: {data['system']}; training data: none (unsupervised: collocation "
            f"points drawn from the system's sampler, fresh each epoch)",
            f"- **architecture**: {s['config']}",
            f"- **recipe**: {s['epochs']} Adam epochs of {s['n_points']} points, lr {s['lr']} "
            f"(cosine decay), Hamiltonian matching {'on' if s['matching'] else 'off'}, then "
            f"{s.get('lbfgs_steps', 0)} L-BFGS iterations (float64) on "
            f"{s.get('lbfgs_points', 0)} fixed points",
            f"- **command**: ``{data['command']}``",
            f"- **wall time**: {data['wall_time_s'] / 60:.1f} min on {data['hardware']} "
            f"(torch {data['torch']})",
            "",
            ".. list-table:: Evaluation on 500 initial conditions (seed 1234) against "
            "dopri5 at rtol = atol = 1e-10",
            "   :header-rows: 1",
            "",
            "   * - t",
            "     - mean relative state error",
            "     - mean abs energy error",
            "     - max abs energy error",
        ]
        ev = data["evaluation"]
        for t, r, e, m in zip(
            ev["times"],
            ev["relative_state_error"],
            ev["energy_error"],
            ev["energy_error_max"],
            strict=True,
        ):
            lines += [f"   * - {t:g}", f"     - {r:.2e}", f"     - {e:.2e}", f"     - {m:.2e}"]
        lines.append("")
    out = here / "generated"
    out.mkdir(exist_ok=True)
    (out / "model_cards_sympflow.rst").write_text("\n".join(lines) + "\n")

    lines = []
    titles = {
        "euler_denoiser_gray": 'EulerDenoiser(in_channels=1, pretrained="default")',
        "euler_denoiser_gray_a095": (
            'EulerDenoiser(in_channels=1, alpha=0.95, pretrained="default")'
        ),
        "euler_denoiser_color": 'EulerDenoiser(in_channels=3, pretrained="default")',
        "euler_denoiser_color_a095": (
            'EulerDenoiser(in_channels=3, alpha=0.95, pretrained="default")'
        ),
        "euler_denoiser_gray_a095_campaign": (
            'EulerDenoiser(in_channels=1, alpha=0.95, pretrained="campaign")'
        ),
        "dncnn_baseline_gray": 'load_dncnn("dncnn-gray")  (baseline)',
        "dncnn_baseline_gray_bf16": 'load_dncnn("dncnn-gray-bf16")  (baseline)',
    }
    for stem, title in titles.items():
        card = weights / f"{stem}.json"
        if not card.is_file():
            continue
        data = json.loads(card.read_text())
        s = data["settings"]
        title = f"``{title}``"
        val = s["val_folder"] or f"held-out training images {s.get('holdout')}"
        lines += [title, "~" * len(title), ""]
        lines += [
            f"- **data**: ``{s['train_folder']}`` ({s['n_train_images']} images; "
            f"held out: {s.get('holdout') or 'none'}), validation: ``{val}`` "
            f"({s['n_val_images']} images)",
            f"- **architecture**: {s['model']} {s['config'] or ''}, "
            f"{s['n_parameters']:,} parameters",
            f"- **recipe**: {s['epochs']} epochs of {s['patches_per_image']} random "
            f"{s['patch_size']}x{s['patch_size']} patches per image (flips, rotations), "
            f"batch {s['batch_size']}, Adam lr {s['lr']} with cosine decay, noise level "
            f"uniform in [{255 * s['sigma_range'][0]:g}, {255 * s['sigma_range'][1]:g}]/255 "
            f"per patch",
            f"- **command**: ``{data['command']}``",
            f"- **wall time**: {data['wall_time_s'] / 60:.0f} min on {data['hardware']} "
            f"(torch {data['torch']}), sharing the machine's 2 cores with other jobs",
        ]
        if data.get("resumes"):  # a run across sessions: which epochs ran in which precision
            changes = [
                f"epoch {r['epoch']}"
                + "".join(
                    f" ({k}: {v['before']} -> {v['now']})"
                    for k, v in r.get("changed_settings", {}).items()
                )
                for r in data["resumes"]
            ]
            lines.append(
                f"- **resumed** {len(changes)} times, at (with the settings that differed from "
                f"the first session's): {'; '.join(changes)}; exported at epoch "
                f"{data['epoch']} by ``scripts/export_checkpoint.py``"
            )
        cert = data.get("certificate")
        if cert:
            lines.append(
                f"- **certificate** (:func:`~deepinv_dynnets.certify`, {cert['method']}): "
                f"Lipschitz <= {cert['lipschitz']:.6g}, alpha <= {cert['alpha']:.4g}"
            )
        else:
            lines.append("- **certificate**: none (not an averaged network)")
        lines += [
            "",
            ".. list-table:: Training history (validation PSNR in dB, fixed noise, no clipping)",
            "   :header-rows: 1",
            "",
            "   * - epoch",
            "     - training MSE",
            *[f"     - sigma = {k}" for k in data["history"][0]["val_psnr"]],
        ]
        for h in data["history"]:
            lines += [f"   * - {h['epoch']}", f"     - {h['loss']:.2e}"]
            lines += [f"     - {v:.2f}" for v in h["val_psnr"].values()]
        lines.append("")
    if not lines:
        lines = ["*No denoiser weights are shipped in this build.*"]
    (out / "model_cards_denoisers.rst").write_text("\n".join(lines) + "\n")


def _denoise_set_table(file: str, name: str | None, entry: dict, data: dict) -> list[str]:
    """One set of a ``denoise_*.json`` record as a reST list-table."""
    sig = [f"{s:g}" for s in data["sigmas"]]
    n_images = len(entry["images"]) if "images" in entry else entry["n_images"]
    certs = [
        f"{label}: Lipschitz <= {r['certificate']['lipschitz']:.6g}, alpha <= "
        f"{r['certificate']['alpha']:.4g}"
        for label, r in entry["models"].items()
        if "certificate" in r
    ]
    lines = [
        f"``{file}``{'' if name is None else f' ({name})'}: {n_images} images of "
        f"``{entry['data']}``, {data['hardware']}"
        + (f"; command ``{data['command']}``" if "command" in data else "")
        + f"; certificates: {'; '.join(certs)}.",
        "",
        ".. list-table:: Mean PSNR (dB, outputs clipped to [0, 1]) and throughput",
        "   :header-rows: 1",
        "",
        "   * - model",
        *[f"     - sigma = {s}" for s in sig],
        "     - megapixels / s",
        "     - parameters",
        "     - noise level given",
        "     - images: role for this model",
    ]
    for label, r in entry["models"].items():
        roles = r.get("image_roles")
        if roles:
            counts = {role: sum(v == role for v in roles.values()) for role in r["psnr_by_role"]}
            role_text = ", ".join(f"{n} {role}" for role, n in counts.items())
        else:
            role_text = "not recorded"
        lines += [f"   * - {label}"]
        lines += [f"     - {r['psnr'][s]:.2f}" for s in sig]
        lines += [
            f"     - {r['megapixels_per_s']:.3f}",
            f"     - {r['parameters']:,}",
            f"     - {'yes' if r.get('noise_level_given', 'DnCNN' not in label) else 'no (blind)'}",
            f"     - {role_text}",
        ]
        if len(r.get("psnr_by_role", {})) > 1:
            for role, row in r["psnr_by_role"].items():
                lines += [f"   * - {label}, {role} images only"]
                lines += [f"     - {row[s]:.2f}" for s in sig]
                lines += ["     - ", "     - ", "     - ", f"     - {role}"]
    published = data.get("published", {})
    published = published.get(name, {}) if "sets" in data else published
    for label, row in published.items():
        lines += [f"   * - {label}"]
        lines += [f"     - {row[s]:.2f}" if s in row else "     - " for s in sig]
        lines += ["     - ", "     - ", "     - ", "     - published"]
    return lines + [""]


def _pnp_table(file: str, data: dict) -> list[str]:
    """A ``pnp_deblur_*.json`` record: means per method and noise level."""
    st = data["settings"]
    where = "full size" if st.get("full") else f"centre crop {st['size']}"
    # records written before --acceleration existed ran the plain iteration
    acceleration = {"default": "on when certified"}.get(st.get("acceleration"), "off")
    acceleration = "on" if st.get("acceleration") == "on" else acceleration
    lines = [
        f"``{file}``: PnP-{st['algorithm']} with the ``{st['denoiser']}`` denoiser "
        f"(alpha {st.get('alpha', 0.5)}, acceleration {acceleration}), "
        f"images of ``{st['data']}`` (patterns {st['only']}, first {st['images']}, {where}), "
        f"kernels ``{st['kernels']}``, {data['hardware']}"
        + (f"; command ``{data['command']}``" if "command" in data else "")
        + ".",
        "",
        ".. list-table:: Means over images and kernels",
        "   :header-rows: 1",
        "",
        "   * - method",
        "     - noise (/255)",
        "     - runs",
        "     - blurred PSNR",
        "     - restored PSNR",
        "     - reached residual 1e-5",
        "     - median iterations to 1e-5",
        "     - seconds per run",
        "     - residual as its theorem says in every run",
        "     - certified in every run",
    ]
    summaries = data.get("methods_summary", {"euler": data["summary"]})
    guarantee = data.get("guarantee", {})
    for method, summary in summaries.items():
        for level, r in summary.items():
            med = r["median_iterations_to_1e-5"]
            lines += [
                f"   * - {method}" + (f" ({guarantee[method]})" if method in guarantee else ""),
                f"     - {level}",
                f"     - {r['runs']}",
                f"     - {r['mean_psnr_blurred']:.2f}",
                f"     - {r['mean_psnr']:.2f}",
                f"     - {r['reached_1e-5']}/{r['runs']}",
                f"     - {'-' if med is None else f'{med:g}'}",
                f"     - {r['mean_seconds']:.1f}",
                f"     - {r['all_monotone']}",
                f"     - {r['all_guaranteed']}",
            ]
    return lines + [""]


def _repro_table(results: Path) -> list[str]:
    """``repro_issue12.json``: the refactored package against the records made before it."""
    path = results / "repro_issue12.json"
    if not path.is_file():
        return ["*No reproduction record: see* ``benchmarks/results/repro_issue12.json``."]
    data = json.loads(path.read_text())
    lines = [
        data["summary"].replace("|", "\\|"),  # plain text: "|x|" would be a substitution
        "",
        ".. list-table:: PnP runs rerun after the refactor, against the committed records",
        "   :header-rows: 1",
        "",
        "   * - configuration",
        "     - runs",
        "     - plain: max abs PSNR difference (dB)",
        "     - plain: iteration differences",
        "     - accelerated: runs",
        "     - accelerated: mean iterations (plain)",
        "     - accelerated: mean PSNR minus plain (dB)",
        "     - accelerated: monotone, certified",
    ]
    for name, row in data["pnp"].items():
        off, acc = row.get("off"), row.get("default")
        if off is None:
            continue
        diffs = sorted(set(off["iteration_differences_vs_committed"]))
        cells = [
            f"   * - {name}",
            f"     - {off['runs']}",
            f"     - {off['max_abs_dpsnr_vs_committed']:.2g}",
            f"     - {', '.join(str(d) for d in diffs)}",
        ]
        if acc is None:
            cells += ["     - 0", "     - ", "     - ", "     - "]
        else:
            cells += [
                f"     - {acc['runs']}",
                f"     - {acc['mean_iterations']:.1f} ({acc['plain_mean_iterations']:.1f})",
                f"     - {acc['mean_psnr_minus_plain']:+.3f}",
                f"     - {acc['all_monotone']}, {acc['all_guaranteed']}",
            ]
        lines += cells
    return lines + [""]


def _denoiser_benchmark_tables() -> None:
    """Render benchmarks/results/denoise_*.json and pnp_deblur_*.json as reST tables."""
    here = DOCS
    results = here.parent / "benchmarks" / "results"
    lines = []
    for path in sorted(results.glob("denoise_*.json")):
        data = json.loads(path.read_text())
        if "sets" in data:
            for name, entry in data["sets"].items():
                lines += _denoise_set_table(path.name, name, entry, data)
        else:  # the single-set records written before BM3D joined the run
            lines += _denoise_set_table(path.name, None, data, data)
    if not lines:
        lines = ["*No results found: run* ``python benchmarks/denoise.py``."]
    out = here / "generated"
    out.mkdir(exist_ok=True)
    (out / "benchmarks_denoise.rst").write_text("\n".join(lines) + "\n")

    lines = []
    for path in sorted(results.glob("pnp_deblur_*.json")):
        data = json.loads(path.read_text())
        if not data.get("complete", True):  # an interrupted run: no summary to show
            continue
        lines += _pnp_table(path.name, data)
    if not lines:
        lines = ["*No results found: run* ``python benchmarks/pnp_deblur.py``."]
    (out / "benchmarks_pnp.rst").write_text("\n".join(lines) + "\n")
    (out / "benchmarks_repro.rst").write_text("\n".join(_repro_table(results)) + "\n")


def write_tables(app=None) -> None:
    """Write every generated table (the ``builder-inited`` hook)."""
    _benchmark_tables()
    _model_cards()
    _denoiser_benchmark_tables()


def setup(app):
    app.connect("builder-inited", write_tables)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

"""The evidence of `study ablate` and `study confirm`, in memory: t-intervals, differences
paired by seed, verdicts in both metric directions, the variants of a config, the tables built
from the runs' values, and Tune's param space of a plain list of configs."""

import math
from dataclasses import replace

import pytest
from ray import tune

from study.commands import ablate, confirm
from study.commands.evidence_input import check_seeds, pick
from study.core import Outcome, TrialConfig
from study.core.errors import UserError
from study.core.record import TrialRecord
from study.engines.repeats import as_grid, config_key
from study.evidence.intervals import (
    Interval,
    differences,
    paired_interval,
    ranked_means,
    t_interval,
    t_quantile,
    verdict,
)
from study.evidence.variants import BASE, variants

RUN = {"dataset": {"name": "digits"}, "model": {"name": "mlp"}, "epochs": 27, "seed": 3}


def trial(**hyperparameters) -> TrialConfig:
    return TrialConfig.parse({**hyperparameters, **RUN, "optuna_trial": 6})


def record(label: str, outcome: str = "completed", value: float | None = None) -> TrialRecord:
    """Trial `label`'s record: its outcome and last val_acc."""
    metrics = {} if value is None else {"val_acc": value}
    number = int(label[1:])
    config = trial().numbered(number - 1)
    return TrialRecord(number, Outcome(outcome), 27, metrics, config, "", label)


# -- intervals -------------------------------------------------------------------------------


def test_t_quantiles_are_the_tables():
    assert t_quantile(5) == pytest.approx(2.7764, abs=1e-4)  # 4 degrees of freedom
    assert t_quantile(2) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(30) == pytest.approx(2.0452, abs=1e-4)


def test_t_interval_of_one_two_three():
    interval = t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2) * std 1 / sqrt(n)
    assert interval.mean == 2.0 and interval.std == pytest.approx(1.0) and interval.n == 3
    assert (interval.low, interval.high) == pytest.approx((2 - half, 2 + half))


def test_t_interval_leaves_out_what_is_not_finite_and_needs_two_values():
    assert t_interval([1.0, math.nan, 3.0, math.inf]).n == 2
    one = t_interval([0.9])
    assert one.mean == 0.9 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    assert t_interval([]).n == 0


def test_differences_pair_by_seed_and_skip_seeds_without_both_values():
    variant = {0: 0.90, 1: 0.95, 2: math.nan, 4: 0.99}
    base = {0: 0.97, 1: 0.96, 2: 0.98, 3: 0.97}
    assert differences(variant, base) == pytest.approx([-0.07, -0.01])


def test_pairing_removes_the_seed_noise_a_plain_difference_of_means_keeps():
    """Seeds that move both configs alike: paired, the change is clear."""
    base = {s: 0.95 + 0.01 * s for s in range(5)}
    variant = {s: v - 0.005 for s, v in base.items()}
    change = paired_interval(variant, base)
    assert change.mean == pytest.approx(-0.005) and change.high < 0
    assert t_interval(list(variant.values())).holds(t_interval(list(base.values())).mean)


# -- verdicts --------------------------------------------------------------------------------


def interval(low: float, high: float, n: int = 5) -> Interval:
    return Interval((low + high) / 2, low, high, 0.01, n)


@pytest.mark.parametrize(
    "low, high, mode, removed, said",
    [
        (-0.05, -0.01, "max", True, "helps"),  # accuracy falls without it
        (0.01, 0.05, "max", True, "hurts"),  # accuracy rises without it
        (-0.01, 0.02, "max", True, "no effect detectable at 5 seeds"),
        (1.0, 3.0, "min", True, "helps"),  # RMSE rises without it
        (-3.0, -1.0, "min", True, "hurts"),
        (-1.0, 1.0, "min", True, "no effect detectable at 5 seeds"),
        (0.01, 0.05, "max", False, "helps"),  # accuracy rises when it is added
        (-0.05, -0.01, "max", False, "hurts"),
        (-3.0, -1.0, "min", False, "helps"),  # RMSE falls when it is added
        (1.0, 3.0, "min", False, "hurts"),
        (0.0, 0.0, "max", True, "no effect detectable at 5 seeds"),  # every seed the same
    ],
)
def test_verdict_reads_the_interval_in_the_metrics_direction(low, high, mode, removed, said):
    assert verdict(interval(low, high), mode, removed) == said


def test_verdict_needs_two_seeds_with_a_value():
    assert verdict(interval(-1, -0.5, n=1), "max") == "not enough seeds with a value (1)"


def test_ranked_means_by_mode_nan_last():
    means = {"a": interval(0.8, 0.9), "b": interval(0.9, 1.0), "c": Interval(*[math.nan] * 4, 0)}
    assert ranked_means(means, "max") == ["b", "a", "c"]
    assert ranked_means(means, "min") == ["a", "b", "c"]


# -- variants --------------------------------------------------------------------------------


def test_variants_switch_off_what_is_on_and_note_what_is_already_off():
    made, skipped = variants(trial(lr=3e-3, weight_decay=3e-4, dropout=0.3, batch_norm=True))
    assert [v.name for v in made] == [BASE, "weight_decay off", "dropout off", "batch_norm off"]
    assert skipped == ["l1", "label_smoothing", "mixup", "cutmix", "augmentation",
                       "early_stopping", "grad_clip"]  # fmt: skip
    by_name = {v.name: v for v in made}
    assert by_name["weight_decay off"].setting == "0.0003"
    changed = by_name["dropout off"].apply(trial(lr=3e-3, dropout=0.3)).hyperparameters
    assert changed == {"lr": 3e-3, "dropout": 0.0}


def test_batch_norm_is_switched_on_where_the_config_has_it_off():
    made, _ = variants(trial(lr=1e-3))  # batch_norm left at its default, off
    (on,) = [v for v in made if v.regularizer == "batch_norm"]
    assert on.name == "batch_norm on" and not on.removed and on.changes == {"batch_norm": True}
    assert on.apply(trial(lr=1e-3)).hyperparameters["batch_norm"] is True


def test_dropout_without_use_dropout_is_off_and_not_run():
    made, skipped = variants(trial(dropout=0.4, use_dropout=False))
    assert "dropout" in skipped and all(v.regularizer != "dropout" for v in made)


def test_every_regularizer_of_the_loop_has_its_variant_with_everything_of_it_off():
    config = trial(l1=1e-5, label_smoothing=0.1, mixup_alpha=0.2, cutmix_alpha=0.5, hflip=True,
                   crop_padding=4, patience=5, grad_clip=1.0, batch_norm=True)  # fmt: skip
    made, skipped = variants(config)
    assert skipped == ["weight_decay", "dropout"]
    by_name = {v.name: v for v in made}
    augmentation = by_name["augmentation off"]
    assert augmentation.setting == "crop_padding=4, hflip"
    assert augmentation.changes == {"crop_padding": 0, "hflip": False, "rotation": 0.0,
                                    "color_jitter": 0.0}  # fmt: skip
    assert by_name["early_stopping off"].changes == {"patience": 0}
    for variant in made[1:]:  # each differs from the config, and keeps its run settings
        ablated = variant.apply(config)
        assert ablated.hyperparameters != config.hyperparameters and ablated.run == config.run


# -- the tables ------------------------------------------------------------------------------


def test_ablation_table_pairs_by_seed_in_a_min_metric():
    made, _ = variants(trial(weight_decay=1e-3, dropout=0.2))
    seeds = [3, 4, 5]
    values = {(BASE, s): 50.0 + s for s in seeds}  # RMSE: lower is better
    values |= {("weight_decay off", s): 52.0 + s + 0.1 * (s % 2) for s in seeds}  # worse
    values |= {("dropout off", s): 49.0 + s + 0.1 * (s % 2) for s in seeds}  # better
    values |= {("batch_norm on", s): 50.0 + s + (0.1 if s % 2 else -0.1) for s in seeds}
    rows = {row["variant"]: row for row in ablate.summarize(values, made, seeds, "min")}
    assert rows["the config itself"]["mean"] == pytest.approx(54.0)
    assert rows["weight_decay off"]["change"] == pytest.approx(2.0667, abs=1e-4)
    assert rows["weight_decay off"]["verdict"] == "helps"
    assert rows["dropout off"]["verdict"] == "hurts"
    assert rows["batch_norm on"]["verdict"] == "no effect detectable at 3 seeds"
    assert rows["weight_decay off"]["pairs"] == 3


def test_confirm_table_ranks_by_mean_and_says_which_are_indistinguishable():
    rows = [record(t, value=v) for t, v in (("t001", 0.98), ("t002", 0.98), ("t003", 0.97))]
    seeds = [0, 1, 2, 3]
    noise = [0.002, -0.003, 0.001, 0.0]
    values = {("t001", s): 0.970 + noise[s] for s in seeds}  # the study's best, ranked second
    values |= {("t002", s): 0.975 + noise[s] + 0.001 * (s % 2) for s in seeds}
    values |= {("t003", s): 0.973 + noise[s] + 0.004 * (s % 2) for s in seeds}
    table = confirm.summarize(values, rows, seeds, "val_acc", "max")
    assert [r["trial"] for r in table] == ["t002", "t003", "t001"]
    assert [r["indistinguishable"] for r in table] == [True, True, False]
    assert table[2]["difference"] == pytest.approx(-0.0055)
    frame = __import__("pandas").DataFrame(table)
    assert confirm.indistinguishable_line(frame, 4).endswith("holds 0): t003")
    lowest_first = confirm.summarize(values, rows, seeds, "val_acc", "min")
    assert lowest_first[0]["trial"] == "t001"


# -- input and Tune's space ------------------------------------------------------------------


def test_seeds_below_two_are_refused_in_one_line():
    with pytest.raises(UserError, match=r"^--seeds: 1 gives no confidence interval; use 2"):
        check_seeds(1)
    check_seeds(2)


def test_a_trial_is_picked_by_its_name_or_number_and_refused_when_it_has_no_value():
    table = [record("t001"), record("t002", "failed"), record("t012")]
    best = [table[2], table[0]]
    assert pick(table, best, None, "s", "val_acc") is table[2]
    assert pick(table, best, "1", "s", "val_acc") is table[0]
    assert pick(table, best, "t12", "s", "val_acc") is table[2]
    with pytest.raises(UserError, match=r"^--trial: study 's' has no trial 't099'; its trials: "):
        pick(table, best, "t099", "s", "val_acc")
    with pytest.raises(UserError, match=r"^--trial: t002 ended failed without a val_acc"):
        pick(table, best, "t002", "s", "val_acc")


def test_a_list_of_configs_is_a_param_space_every_config_sets_all_of():
    configs = [{"lr": 0.01, "seed": 0, "model": {"widths": [8]}},
               {"lr": 0.01, "seed": 1, "model": {"widths": [8]}, "batch_norm": True},
               {"lr": 0.01, "seed": 0, "model": {"widths": [8]}, "stop_epoch": 9}]  # fmt: skip
    space, full = as_grid(configs)
    assert space["lr"] == 0.01 and space["model"] == {"widths": [8]}
    assert isinstance(space["seed"], tune.search.sample.Categorical)
    assert space["seed"].categories == [0, 1]
    assert full[0] == {"lr": 0.01, "seed": 0, "model": {"widths": [8]}, "batch_norm": False,
                       "stop_epoch": None}  # fmt: skip
    assert len({config_key(c) for c in full}) == 3


def test_the_layout_knows_the_roles_ray_folders(tmp_path):
    from study.core.layout import REPEAT_ROLES
    from study.spec import StudySpec

    assert (ablate.ROLE, confirm.ROLE) == REPEAT_ROLES
    layout = StudySpec().layout(tmp_path)
    assert [p.name for p in layout.repeats_dirs] == [
        "digits-regularization.ablation", "digits-regularization.confirm",
    ]  # fmt: skip


def test_confirm_with_a_baseline_says_where_each_trial_stands_against_it():
    """`study confirm --with t003`: each other trial's difference from the baseline, paired by
    seed, with its interval and what it says; the baseline's own row says so."""
    rows = [record(t, value=v) for t, v in (("t001", 0.98), ("t002", 0.97), ("t003", 0.95))]
    seeds = [0, 1, 2, 3]
    noise = [0.002, -0.003, 0.001, 0.0]
    values = {("t001", s): 0.980 + noise[s] for s in seeds}  # clearly above the baseline
    values |= {("t002", s): 0.950 + noise[s] + 0.004 * (s % 2 - 0.5) for s in seeds}  # level
    values |= {("t003", s): 0.950 + noise[s] for s in seeds}
    table = {r["trial"]: r for r in confirm.summarize(values, rows, seeds, "val_acc", "max",
                                                       baseline="t003")}  # fmt: skip
    assert table["t001"]["against_baseline"] == "better than t003"
    assert table["t001"]["vs_baseline"] == pytest.approx(0.03)
    assert table["t002"]["against_baseline"] == "no difference detectable at 4 seeds"
    assert table["t003"]["against_baseline"] == "the baseline"
    assert table["t003"]["vs_baseline"] is None
    lowest = {r["trial"]: r for r in confirm.summarize(values, rows, seeds, "val_acc", "min",
                                                        baseline="t003")}  # fmt: skip
    assert lowest["t001"]["against_baseline"] == "worse than t003"  # lower is better here
    without = confirm.summarize(values, rows, seeds, "val_acc", "max")
    assert "against_baseline" not in without[0]


def test_with_a_trial_the_study_does_not_have_is_refused_naming_with():
    table = [record("t001"), record("t002", "failed")]
    with pytest.raises(UserError, match=r"^--with: study 's' has no trial 't009'; its trials: "):
        pick(table, [table[0]], "t009", "s", "val_acc", "--with")
    with pytest.raises(UserError, match=r"^--with: t002 ended failed without a val_acc"):
        pick(table, [table[0]], "2", "s", "val_acc", "--with")


def test_the_report_opens_with_the_best_trial_against_the_baseline():
    from study.core.record import ranked
    from study.evidence.analysis import baseline_line

    config = trial().numbered(0)
    config = replace(config, run=replace(config.run, enqueued="1: recipe.yaml"))
    base = replace(record("t001", value=0.95), config=config)
    trials = [base, record("t002", value=0.97), record("t003", value=0.90)]
    line = baseline_line(trials, ranked(trials, "val_acc", "max"), "val_acc", "s")
    assert line == ("Best vs your baseline t001 (recipe.yaml): +0.0200 val_acc (t002), in one "
                    "run each; `study confirm s --with t001` for intervals.")  # fmt: skip
    alone = [base, record("t002", value=0.90)]
    assert baseline_line(alone, ranked(alone, "val_acc", "max"), "val_acc", "s").startswith(
        "Best is your baseline t001 (recipe.yaml): no trial beat it"
    )
    assert baseline_line(trials[1:], ranked(trials[1:], "val_acc", "max"), "val_acc", "s") is None

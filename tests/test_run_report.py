"""The run report's advice on which model to use: from the target scores when there are labels, from the
realism of the synthetic images otherwise."""

from nucleaizer.pipeline.report import advice


def scores(**dsb):
    return {variant: {"dsb": value} for variant, value in dsb.items()}


def test_advice_keeps_the_chosen_variant_when_it_scores_best():
    lines = advice("auto", scores(autostyle=0.30, nostyle=0.25), {})
    assert "holds the autostyle model" in lines[0]
    assert "use it" in lines[1]


def test_advice_points_to_the_variant_that_scores_clearly_better():
    lines = advice("auto", scores(autostyle=0.20, nostyle=0.26), {})
    assert "nostyle scores +0.060 DSB above it" in lines[1]
    assert "style=none" in lines[1]


def test_advice_ignores_a_difference_within_the_noise():
    assert "use it" in advice("auto", scores(autostyle=0.250, nostyle=0.255), {})[1]


def test_advice_without_target_labels_says_how_to_measure():
    lines = advice("auto", {}, {0: {"c2st_accuracy": 0.6}})
    assert "compare=[none]" in lines[1]
    assert len(lines) == 2  # realistic synthetic images: nothing to add


def test_advice_names_the_styles_whose_synthetic_images_look_fake():
    lines = advice("auto", {}, {0: {"c2st_accuracy": 0.97}, 1: {"c2st_accuracy": 0.7}})
    assert "style(s) 0 " in lines[-1]
    assert "stylegen.train.budget.max_steps" in lines[-1]


def test_advice_says_when_the_start_model_beats_every_fine_tuned_variant():
    lines = advice("auto", scores(autostyle=0.30, nostyle=0.28), {}, {"dsb": 0.35}, "generalist")
    assert "+0.050 DSB above every fine-tuned variant" in lines[-1]
    assert "infer.py model=generalist" in lines[-1]
    # a bare .pt is no model infer.py can take: only the budget advice remains
    lines = advice("auto", scores(autostyle=0.30, nostyle=0.28), {}, {"dsb": 0.35}, "/models/start.pt")
    assert "infer.py" not in lines[-1] and "more budget" in lines[-1]


def test_advice_is_silent_about_a_start_model_that_fine_tuning_beat():
    lines = advice("auto", scores(autostyle=0.30, nostyle=0.28), {}, {"dsb": 0.295}, "generalist")
    assert not any("pre-segmentation" in line for line in lines)

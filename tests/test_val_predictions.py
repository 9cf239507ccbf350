"""val_predictions.png shows val images across the classes, mistakes first, with the weights model_best.pth holds:
it is drawn on the epochs that made a new best, not on every epoch (and so not from the last epoch's weights)."""

import os

from PIL import Image
from test_train import make_folder, toy_cfg

import inceptionnext.tasks.classification.task as classification_task
from inceptionnext.tasks.classification.examples import candidate_pool, mistakes_first, round_robin
from inceptionnext.train import fit


def test_the_pool_spans_the_classes_before_any_repeats():
    targets = [c for c in range(5) for _ in range(10)]  # folder order: class 0's ten images first
    pool = candidate_pool(targets, len(targets), 12)
    assert len(pool) == len(set(pool)) == 12
    assert sorted(targets[i] for i in pool[:5]) == [0, 1, 2, 3, 4]  # one of each class first
    assert sorted(targets[i] for i in pool[5:10]) == [0, 1, 2, 3, 4]
    assert pool == candidate_pool(targets, len(targets), 12)  # the same pool every epoch
    assert candidate_pool(None, 50, 12) == list(range(12))  # classes unknown: the first ones
    assert len(candidate_pool(targets[:7], 7, 48)) == 7  # a pool never asks for more than there are
    assert round_robin([0, 1, 2], [1, 1, 1], 5) == [0, 1, 2]


def test_mistakes_come_first_spread_over_the_classes():
    targets = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    predictions = [1, 1, 0, 1, 1, 1, 0, 2, 2]  # wrong: positions 0, 1 (class 0) and 6 (class 2)
    chosen = mistakes_first(list(range(9)), targets, predictions, 5)
    assert sorted(chosen[:3]) == [0, 1, 6] and {targets[p] for p in chosen[:2]} == {0, 2}  # both classes, then again
    assert all(predictions[p] == targets[p] for p in chosen[3:]) and len(set(chosen)) == 5


def test_the_run_draws_val_predictions_from_its_best_epochs_across_the_classes(tmp_path, monkeypatch):
    drawn = []
    real = classification_task.prediction_grid

    def grid(images, targets, predictions, names, title, path):
        drawn.append((list(targets), list(predictions), title))
        return real(images, targets, predictions, names, title, path)

    monkeypatch.setattr(classification_task, "prediction_grid", grid)
    data = make_folder(tmp_path / "data", classes=4, train=4, val=5)  # 20 val images, in folders of 5
    # an lr of 1e-9 and no weight decay: the weights barely move, so epoch 1 stays the best (a tie is no new best)
    # and is the only one drawn
    res = fit(
        toy_cfg(
            tmp_path, data, model="_test_plain_net", epochs=3, plot=True, lr=1e-9, sched="constant", weight_decay=0.0
        )
    )
    assert len(res.history) == 3 and len({row["val_top1"] for row in res.history}) == 1
    assert [title.split("(epoch ")[1].split(")")[0] for *_, title in drawn] == ["1"]
    targets, predictions, title = drawn[-1]
    assert len(targets) == 16 and set(targets) == set(range(4))  # all four classes, not the first folders
    wrong = [p != t for p, t in zip(predictions, targets)]
    assert wrong == sorted(wrong, reverse=True)  # mistakes first
    assert "on 20 val images across 4 classes" in title and "mistakes first" in title
    picture = os.path.join(res.out_dir, "val_predictions.png")
    with Image.open(picture) as im:
        assert im.width >= 1000

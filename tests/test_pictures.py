"""The pictures `segment` and `detect` write for people: enlarged to a readable size, a legend of the classes they
show (in their colours), and detection labels placed off the objects they name."""

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

from inceptionnext.tasks.detection.draw import PALETTE, detection_picture, draw_detections
from inceptionnext.tasks.segmentation.draw import overlay, overlay_picture
from inceptionnext.utils.plots import enlargement

NAMES = [f"digit {i}" for i in range(10)]


def has_colour(pixels: np.ndarray, rgb) -> bool:
    return bool((pixels.reshape(-1, 3) == np.asarray(rgb, dtype=np.uint8)).all(1).any())


def test_enlargement_is_whole_pixels_towards_512_and_never_shrinks():
    assert enlargement(48, 48) == 10 and enlargement(32, 100) == 5 and enlargement(600, 800) == 1


def test_detection_labels_sit_outside_the_boxes_and_hide_no_other_label():
    image = torch.full((3, 200, 200), 90, dtype=torch.uint8)
    boxes = torch.tensor([[40.0, 60.0, 70.0, 90.0], [75.0, 60.0, 105.0, 90.0], [120.0, 5.0, 150.0, 30.0]])
    labels, scores = torch.tensor([1, 2, 3]), torch.tensor([0.9, 0.8, 0.7])  # two side by side, one at the top edge
    drawn = draw_detections(image, dict(boxes=boxes, labels=labels, scores=scores), NAMES, 0.5, upscale=1)
    boxes_only = draw_bounding_boxes(image, boxes, colors=[PALETTE[int(c)] for c in labels], width=2)
    for x0, y0, x1, y1 in boxes.int().tolist():  # every box's inside is as the boxes alone left it
        assert torch.equal(drawn[:, y0 + 2 : y1 - 1, x0 + 2 : x1 - 1], boxes_only[:, y0 + 2 : y1 - 1, x0 + 2 : x1 - 1])
    changed = (drawn != boxes_only).any(0)
    assert changed[:60, :].any()  # labels above the side-by-side pair
    assert changed[30:, 115:160].any()  # the top-edge box's label went below it
    for c in labels.tolist():  # each label's tab is in its class colour
        assert has_colour(drawn.permute(1, 2, 0).numpy(), PALETTE[c])


def test_the_detect_picture_is_readable_and_has_a_legend_of_what_it_found():
    image = torch.full((3, 48, 48), 30, dtype=torch.uint8)
    det = dict(
        boxes=torch.tensor([[10.0, 12.0, 20.0, 30.0], [26.0, 14.0, 40.0, 34.0], [2.0, 2.0, 8.0, 8.0]]),
        labels=torch.tensor([4, 4, 7]),
        scores=torch.tensor([0.9, 0.6, 0.2]),  # the third is below the threshold: not drawn, not in the legend
    )
    picture = detection_picture(image, det, NAMES, 0.5)
    assert picture.shape[1] == 480 and picture.shape[0] > 480 and picture.dtype == np.uint8
    legend = picture[480:]
    assert has_colour(legend, PALETTE[4]) and not has_colour(legend, PALETTE[7])
    assert not has_colour(picture[:480], PALETTE[7])
    empty = detection_picture(image, dict(boxes=det["boxes"][:0], labels=det["labels"][:0], scores=det["scores"][:0]))
    assert empty.shape[1] == 480 and (empty[:480] == 30).all()  # nothing found: the image and a one-line legend


def test_the_segment_overlay_is_enlarged_with_a_legend_of_the_classes_it_shows():
    img = np.full((48, 48, 3), 200, np.uint8)
    mask = np.zeros((48, 48), np.int64)
    mask[5:20, 5:25], mask[30:34, 2:6] = 1, 3  # class 2 is absent
    colours = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200]], np.float32)
    picture = overlay_picture(img, mask, colours, ["background", "a", "b", "c"], 0.5, untinted=(0,))
    assert picture.shape[1] == 480 and picture.shape[0] > 480
    small = overlay(img, mask, colours, 0.5, (0,))
    assert np.array_equal(picture[:480], small.repeat(10, 0).repeat(10, 1))  # the overlay, pixel for pixel
    legend = picture[480:]
    assert has_colour(legend, colours[1]) and has_colour(legend, colours[3]) and not has_colour(legend, colours[2])
    many = overlay_picture(
        img, (np.arange(48 * 48) % 40).reshape(48, 48), np.zeros((40, 3), np.float32), [str(i) for i in range(40)]
    )
    assert many.shape[0] > picture.shape[0]  # 24 classes named, the rest counted, on more legend rows

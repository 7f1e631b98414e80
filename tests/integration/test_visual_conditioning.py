"""Image-to-video, continuation, long videos by re-encoding, and prompt sequences on a tiny random pipeline.

The tiny pipeline makes 9-frame 32x32 videos: a tokenizer with ct=4 (9 frames -> 3 latent frames) and
generators with max_grid (3, 4, 4). Random weights: these tests pin the mechanics (what is kept, what is
encoded, what each window reads), not the quality.
"""

import numpy as np
import pytest
import torch
from PIL import Image

import pipelines.video as video_module
from core.frames import resize_center_crop
from core.video_io import read_video
from core.video_write import write_video
from pipelines import VideoPipeline
from pipelines.rollout import handoff_latents, to_video
from tools.generate import main

PROMPT = "a red circle moving left"


@pytest.fixture(scope="module")
def clip():
    """A 13-frame 48x80 clip (not the model's size: it must be resized and center-cropped)."""
    return np.random.default_rng(0).integers(0, 256, (13, 48, 80, 3), dtype=np.uint8)


def record_windows(monkeypatch, pipe_mode: str) -> list[tuple]:
    """Wraps the sampler the pipeline calls; returns the list it fills with (grid, context ids, cond)."""
    name = "sample_ar" if pipe_mode == "ar" else "sample_maskgit"
    original, calls = getattr(video_module, name), []

    def wrapped(model, cond, grid, **kw):
        calls.append((grid, None if kw.get("context") is None else kw["context"].clone(), cond))
        return original(model, cond, grid, **kw)

    monkeypatch.setattr(video_module, name, wrapped)
    return calls


@pytest.mark.parametrize("mode,order", [("ar", "frame"), ("ar", "token"), ("ar", "cube"), ("maskgit", "frame"),
                                        ("maskgit", "cube"), ("maskgit", "clip")])  # fmt: skip
def test_continuation_keeps_the_context_and_generates_after_its_encoding(pipe, clip, mode, order, monkeypatch):
    calls = record_windows(monkeypatch, mode)
    out = pipe(PROMPT, video=clip, context_frames=5, num_frames=9, mode=mode, order=order,
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    given = resize_center_crop(clip[-5:], (32, 32))  # the last 5 frames, at the model's size
    assert out.frames.shape == (1, 9, 32, 32, 3)
    assert np.array_equal(out.frames[0, :5], given)  # context frames come back as given
    assert len(calls) == 1 and calls[0][0] == (3, 4, 4)
    encoded = pipe.tokenizer.encode(to_video(given[None], next(pipe.tokenizer.parameters())))  # (1, 2, 4, 4)
    assert torch.equal(calls[0][1], encoded)  # the generator continues from the tokenizer's encoding
    assert torch.equal(out.ids[:, :2], encoded)  # and keeps those tokens in the grid it returns


def test_image_to_video_starts_from_the_image(pipe, clip, tmp_path, monkeypatch):
    calls = record_windows(monkeypatch, "maskgit")
    image = clip[0]
    out = pipe(PROMPT, image=image, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 9, 32, 32, 3)
    assert np.array_equal(out.frames[0, 0], resize_center_crop(image[None], (32, 32))[0])
    assert calls[0][1].shape == (1, 1, 4, 4)  # one latent frame: the image, encoded alone
    path = tmp_path / "first.png"  # the same image from a file
    Image.fromarray(image).save(path)
    again = pipe(PROMPT, image=str(path), generator=torch.Generator().manual_seed(0))
    assert np.array_equal(again.frames, out.frames)


@pytest.mark.parametrize("mode,order", [("maskgit", "frame"), ("ar", "frame"), ("maskgit", "clip")])
def test_long_videos_continue_from_re_encoded_frames(pipe, mode, order, monkeypatch):
    """21 frames with a 9-frame model: 4 windows; every later window reads the tokenizer's encoding of the
    last 5 frames made so far as a fresh clip, so no later latent ever sits in the first-frame slot."""
    calls = record_windows(monkeypatch, mode)
    out = pipe(PROMPT, num_frames=21, mode=mode, order=order, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 21, 32, 32, 3)
    assert [c[0] for c in calls] == [(3, 4, 4)] * 4
    like = next(pipe.tokenizer.parameters())
    for k, (_, ctx, _) in enumerate(calls[1:], start=1):
        last = out.frames[:, 4 * k : 4 * k + 5]  # the 5 frames before window k's 4 new ones
        assert torch.equal(ctx, pipe.tokenizer.encode(to_video(last, like))), k
    assert out.ids.shape == (1, 3 + 3 * 1, 4, 4)  # the first grid, then one new latent per window


def test_unconditional_continuation(pipe, clip, monkeypatch):
    calls = record_windows(monkeypatch, "maskgit")
    out = pipe(video=clip, context_frames=5, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 9, 32, 32, 3)
    cond = calls[0][2]
    assert cond.text is None and bool(cond.drop.all())  # the null condition of classifier-free guidance


def test_story_follows_each_prompt_and_continues_the_last_frames(pipe, monkeypatch):
    calls = record_windows(monkeypatch, "maskgit")
    prompts = ["a red circle moving left", "a blue square moving up", "a green triangle moving down"]
    out = pipe.story(prompts, segment_frames=9, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 1 + 3 * 8, 32, 32, 3)
    assert out.ids.shape == (1, 1 + 3 * 2, 4, 4)  # the ids decode to the frames: no re-encoded context repeated
    texts = [pipe.text_encoder.encode([p]).features for p in prompts]
    # each segment one window: segments 2 and 3 read 1 latent (the last frame) and add 8 new frames = 2 latents
    per_call = [next(i for i, t in enumerate(texts) if torch.equal(c[2].text, t)) for c in calls]
    assert per_call == [0, 1, 2]
    assert [c[0][0] for c in calls] == [3, 3, 3]
    like = next(pipe.tokenizer.parameters())
    # a changed prompt starts from the last frame alone: given the frames before it, the shipped model went on in the
    # old direction in 71 of 72 stories (selection seed 1)
    assert torch.equal(calls[1][1], pipe.tokenizer.encode(to_video(out.frames[:, 8:9], like)))
    assert torch.equal(calls[2][1], pipe.tokenizer.encode(to_video(out.frames[:, 16:17], like)))


def test_a_repeated_prompt_continues_the_motion_of_the_last_frames(pipe, monkeypatch):
    """The handoff to the last frame alone is for a changed prompt; the same prompt again reads the last 2 latents'
    frames (default_overlap of a 3-latent window), so its motion carries on as in a long video."""
    calls = record_windows(monkeypatch, "maskgit")
    out = pipe.story([PROMPT, PROMPT, "a blue square moving up"], segment_frames=9,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    like = next(pipe.tokenizer.parameters())
    assert [c[0][0] for c in calls] == [3, 3, 3, 3]  # latents of each window: segment 2 takes two of 2 + 1
    assert torch.equal(calls[1][1], pipe.tokenizer.encode(to_video(out.frames[:, 4:9], like)))
    assert torch.equal(calls[2][1], pipe.tokenizer.encode(to_video(out.frames[:, 8:13], like)))
    assert torch.equal(calls[3][1], pipe.tokenizer.encode(to_video(out.frames[:, 16:17], like)))


def test_a_prompt_retyped_with_other_case_or_spacing_is_the_same_prompt():
    """A repeated prompt typed as "A red circle  moving left " was taken for a new one: its segment restarted from
    the last frame alone and lost the motion. Other words are still a new prompt."""
    story = ["a red circle moving left", "A Red circle  moving left ", "a red circle moving right"]
    assert [handoff_latents(story, k, 5) for k in range(3)] == [None, 3, 1]  # 3: default_overlap(5)


def test_a_list_of_images_makes_one_video_each_and_numpy_integers_are_integers(pipe, clip):
    """A list of images is a batch ("a list of one per video"), with one prompt or none; NumPy integers (labels,
    num_frames, num_videos) count as integers; a num_videos that disagrees with a list is refused."""
    images = [clip[0], clip[5], clip[9]]
    g = torch.Generator().manual_seed(0)
    assert pipe(PROMPT, image=images, generator=g).frames.shape[0] == 3
    out = pipe(image=images, num_frames=np.int64(5), generator=g)
    assert out.frames.shape[:2] == (3, 5)
    starts = resize_center_crop(np.stack(images), 32)  # the image comes back as the first frame
    assert np.array_equal(out.frames[:, 0], starts)
    assert pipe(labels=np.int64(1), num_videos=np.int64(2), num_frames=5, generator=g).frames.shape[0] == 2
    with pytest.raises(ValueError, match="num_videos=3 disagrees with the 2 prompts/labels"):
        pipe([PROMPT, PROMPT], num_videos=3)
    with pytest.raises(ValueError, match="got 3 images/videos for 2 videos"):
        pipe(PROMPT, image=images, num_videos=2)
    # story takes num_videos "as in __call__": it defaulted to 1 and refused a list, and None was a TypeError
    story = pipe.story([PROMPT, PROMPT], segment_frames=5, image=images, generator=g)
    assert story.frames.shape[:2] == (3, 9) and np.array_equal(story.frames[:, 0], starts)
    assert pipe.story([PROMPT], segment_frames=5, num_videos=None, generator=g).frames.shape[0] == 1
    with pytest.raises(ValueError, match="num_videos must be an integer >= 1, got 0"):
        pipe.story([PROMPT], segment_frames=5, num_videos=0)


def test_bad_visual_context_is_refused(pipe, clip):
    cases = [
        (dict(image=clip[0], video=clip, context_frames=5), "not both"),
        (dict(video=clip, context_frames=4), "cannot be encoded on its own"),
        (dict(video=clip, context_frames=17, num_frames=21), "fewer than context_frames=17"),
        (dict(video=clip, context_frames=9, num_frames=9), "leave nothing to generate"),
        (dict(video=clip), "needs context_frames"),
        (dict(context_frames=5), "needs a video"),
        (dict(image=clip[0].astype(np.float32)), "uint8"),
        (dict(image=np.zeros((0, 32, 3), np.uint8)), "uint8"),
        (dict(image=clip[:2]), "one frame"),
        (dict(video=clip, context_frames="5"), "context_frames must be an integer, got '5'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            pipe(PROMPT, **kwargs)
    for prompt in (123, ["a red circle", 7]):
        with pytest.raises(ValueError, match="prompt must be a string or a list of strings"):
            pipe(prompt)
    with pytest.raises(ValueError, match="segment_frames=5 adds no frames|not reachable"):
        pipe.story([PROMPT], segment_frames=3)


def test_cli_continues_a_video_file_and_refuses_bad_context(model_dir, clip, tmp_path, capsys):
    model = str(model_dir)
    src = tmp_path / "src.mp4"
    write_video(src, clip, fps=8)
    out = tmp_path / "cont.mp4"
    assert main(["--model", model, "--video", str(src), "--context-frames", "5", "--num-frames", "13",
                 "--prompt", PROMPT, "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert read_video(out).shape == (13, 32, 32, 3)
    capsys.readouterr()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    bad = [
        (["--video", str(src), "--context-frames", "17", "--num-frames", "21"], "fewer than context_frames=17"),
        (["--video", str(src), "--context-frames", "6"], "cannot be encoded on its own"),
        (["--video", str(src), "--context-frames", "9", "--num-frames", "9"], "leave nothing to generate"),
        (["--image", str(empty)], "is empty"),
        (["--image", str(tmp_path / "missing.png")], "does not exist"),
        (["--image", str(src), "--video", str(src), "--context-frames", "5"], "not allowed with"),
    ]
    for args, message in bad:
        target = tmp_path / "x.mp4"
        assert main(["--model", model, *args, "--out", str(target), "--quiet"]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
        assert not target.exists()


def test_a_one_latent_generator_refuses_to_continue_instead_of_slicing_nothing(pipe):
    """With max_grid[0] = 1 no window can hold context plus a new latent: the window arithmetic used to slice
    zero frames and fail inside the tokenizer with a shape message."""
    from pipelines.rollout import roll_out

    def sample(grid, ctx):
        return torch.zeros((1, *grid), dtype=torch.long)

    kw = dict(max_latents=1, latent_hw=(4, 4), batch=1)
    assert roll_out(sample, pipe.tokenizer, num_frames=1, **kw).frames.shape == (1, 1, 32, 32, 3)
    for num_frames, context in ((5, None), (5, np.zeros((1, 1, 32, 32, 3), np.uint8))):
        with pytest.raises(ValueError, match="^a generator of 1 latent frame makes single images"):
            roll_out(sample, pipe.tokenizer, num_frames=num_frames, context=context, **kw)


@pytest.mark.parametrize("num_frames,context", [(9, 6), (7, 5), (9, 9)])
def test_roll_out_refuses_lengths_the_tokenizer_cannot_make(pipe, num_frames, context):
    """Called directly with a 6-frame context and num_frames=9, the last window held no new latent, and its whole
    re-decoded window was appended: frames 6-8 of the output were context frames 1-3 again."""
    from pipelines.rollout import roll_out

    def sample(grid, ctx):
        return torch.zeros((1, *grid), dtype=torch.long)

    frames, kw = np.zeros((1, context, 32, 32, 3), np.uint8), dict(max_latents=3, latent_hw=(4, 4), batch=1)
    with pytest.raises(ValueError, match=r"must be 1 \+ k\*4|leave nothing to generate"):
        roll_out(sample, pipe.tokenizer, num_frames=num_frames, context=frames, **kw)
    out = roll_out(sample, pipe.tokenizer, num_frames=9, context=frames[:, :5], **kw)
    assert out.frames.shape[1] == 9 and out.ids.shape[1] == 3  # a right length still works


def test_a_decoder_that_gives_nan_is_an_error_not_a_black_video(model_dir):
    """rollout.to_pixels cast NaN to 0: a diverged decoder (an fp16 overflow) gave an all-black video without a word,
    and a long video re-encoded the black frames as its next window's context."""
    broken = VideoPipeline.from_pretrained(model_dir)
    convs = [m for m in broken.tokenizer.decoder.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.Conv2d))]
    with torch.no_grad():
        convs[-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        broken("a", mode="maskgit", order="frame", num_frames=9, generator=torch.Generator().manual_seed(0))

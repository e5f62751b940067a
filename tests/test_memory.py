"""The fit estimate against real bytes, device maps, and disk offload giving the same logits."""
import pytest
import torch

from secbook import memory as M


@pytest.mark.parametrize("fixture", ["tiny", "small_llama"])
def test_parameter_count_and_weight_bytes_are_exact(fixture, request):
    model, _ = request.getfixturevalue(fixture)
    real = sum(p.numel() for p in model.parameters())
    assert M.parameter_count(model) == real
    assert M.estimate(model, "fp32").weights == sum(p.numel() * p.element_size() for p in model.parameters())
    assert M.estimate(model, "bf16").weights == real * 2


@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b"])
def test_parameter_count_of_full_replicas(name):
    from transformers import AutoModelForCausalLM

    from secbook.models import replica_config

    config = replica_config(name)
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(config)
    assert M.parameter_count(config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("fixture", ["tiny", "small_llama"])
def test_kv_cache_estimate_equals_allocated_cache(fixture, request):
    from secbook.hardware import output_cache

    model, _ = request.getfixturevalue(fixture)
    n, batch = 40, 2
    with torch.no_grad():
        out = model(input_ids=torch.randint(0, 1000, (batch, n)), use_cache=True, logits_to_keep=1)
    cache = output_cache(out)
    allocated = sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
                    for layer in cache.layers)
    assert M.kv_cache_bytes(model, batch=batch, context=n, dtype="fp32") == allocated


def test_fit_verdicts_and_the_kv_formula():
    e = M.estimate("Llama-3.1-8B", "bf16", batch=1, context=8192, device="T4")
    assert e.kv_cache == 2 * 32 * 8 * 128 * 8192 * 2 == 2**30  # 1 GiB at 8k context
    assert e.fits is False and M.estimate("Llama-3.1-8B", "int4", 1, 8192, "T4").fits
    assert M.estimate("Llama-3.1-8B", "bf16", 1, 8192, "L4").fits
    assert M.max_context("Llama-3.1-8B", "L4") > M.max_context("Llama-3.1-8B", "L4", batch=4) > 0
    assert M.max_context("Llama-3.1-70B", "A100 80GB") == 0  # 140 GB of bf16 weights
    assert M.parameter_count("Llama-3.1-8B") == 8_030_261_248
    with pytest.raises(ValueError, match="unknown device"):
        M.estimate("Llama-3.1-8B", device="TPU v9")
    with pytest.raises(ValueError, match="batch and context"):
        M.estimate("Llama-3.1-8B", batch=0)
    with pytest.raises(ValueError, match="unknown model"):
        M.estimate("GPT-5")


def test_offload_to_disk_gives_the_same_logits(tiny, tmp_path):
    model, tok = tiny
    ids = tok("class Foo:\n    def __init__(self):\n", return_tensors="pt").input_ids
    m = M.offload(model, {"cpu": "12MB"}, tmp_path)
    places = list(m.hf_device_map.values())
    assert "disk" in places and "cpu" in places
    assert M._folder_bytes(tmp_path) > 4 * 3_000_000  # at least four decoder layers went to disk
    with torch.no_grad():
        assert torch.equal(m(ids).logits, model(ids).logits)
    assert next(model.parameters()).device.type == "cpu"  # the original is untouched


def test_device_map_auto_from_checkpoint(tiny, tmp_path):
    from secbook.paths import MODELS_DIR

    model, tok = tiny
    ids = tok("print('hi')\n", return_tensors="pt").input_ids
    m = M.load_with_device_map(MODELS_DIR / "tiny", {"cpu": "10MB"}, tmp_path)
    assert "disk" in m.hf_device_map.values()
    with torch.no_grad():
        assert torch.equal(m(ids).logits, model(ids).logits)


def test_budget_below_one_layer_is_refused(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="smaller than one decoder layer"):
        M.plan_device_map(model, {"cpu": "1MB"})
    with pytest.raises(ValueError, match="at least one device"):
        M.plan_device_map(model, {})


def test_fit_widget_callback():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from secbook.widgets import memory_fit_update

    fig, ax = plt.subplots()
    e, text = memory_fit_update("T4", "Llama-3.1-8B", "fp16", batch=1, context=8192, ax=ax)
    assert e.fits is False and "does NOT fit" in text and len(ax.patches) == 4
    plt.close(fig)
    e, text = memory_fit_update("T4", "Llama-3.1-8B", "int4", 1, 8192)
    assert e.fits and "fits" in text
    assert "no bf16" in memory_fit_update("T4", "Llama-3.2-1B", "bf16", 1, 1024)[1]
    for bad in (dict(batch=0), dict(context=2_000_000)):
        with pytest.raises(ValueError, match="must be in"):
            memory_fit_update("T4", "Llama-3.2-1B", "fp16", **{"batch": 1, "context": 1024, **bad})
    with pytest.raises(ValueError, match="unknown GPU"):
        memory_fit_update("TPU", "Llama-3.2-1B", "fp16", 1, 1024)
    with pytest.raises(ValueError, match="unknown dtype"):
        memory_fit_update("T4", "Llama-3.2-1B", "fp8", 1, 1024)


def test_exercise_checks(capsys):
    from secbook import exercises

    exercises.check_kv_cache_8k(2 * 32 * 8 * 128 * 8192 * 2)
    exercises.check_weights_fit_t4(8.0)
    exercises.check_weights_fit_t4(15 * 2**30 / 2 / 1e9)  # from the ~15 GiB usable: accepted too
    exercises.check_allreduce_bytes(12288)
    assert capsys.readouterr().out.count("Correct") == 4
    with pytest.raises(AssertionError, match="KV heads"):
        exercises.check_kv_cache_8k(2 * 32 * 32 * 128 * 8192 * 2)  # query heads instead of KV heads
    with pytest.raises(AssertionError):
        exercises.check_weights_fit_t4(17.2)
    with pytest.raises(AssertionError):
        exercises.check_allreduce_bytes(6144)


@pytest.mark.parametrize("family", ["qwen3", "mistral", "gemma2", "gemma3_text", "phi3", "gpt2", "gpt_neox"])
def test_estimates_right_for_each_family(family):
    """Parameters from the config alone = the model's (q/k norms, 4 norms, fused or Conv1D projections, learned
    positions, LayerNorm biases); the KV estimate = the bytes transformers' cache really holds, sliding-window
    layers included (20 positions, windows of 6); the weight bytes = model_bytes (tied tensors once)."""
    from secbook.families import prompt, tiny_model
    from secbook.kvcache import measured_kv_bytes
    from secbook.measure import model_bytes

    model = tiny_model(family)
    real = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert M.parameter_count(model.config) == M.parameter_count(model) == real
    for n in (4, 20):
        assert M.kv_cache_bytes(model.config, context=n, dtype="fp32") == measured_kv_bytes(model, prompt(length=n))
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert model_bytes(model) == 4 * real + buffers
    assert M.estimate(model.config, dtype="fp32", context=20).weights == 4 * real


def test_offload_cost_keeps_its_rounds(tiny):
    model, tok = tiny
    ids = tok("def f(x):\n", return_tensors="pt").input_ids
    df = M.offload_cost(model, ids, {"cpu": "12MB"}, repeats=2)
    assert df["max_logit_diff"].iloc[1] == 0.0 and df["bytes_on_disk"].iloc[1] > 0
    rounds = df.attrs["rounds"]
    assert list(rounds) == list(df.index) and all(len(v) == 2 for v in rounds.values())

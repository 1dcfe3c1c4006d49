"""Model loading: LeTI special tokens, embedding resize, padding, save/reload, errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from leti.errors import LetiError
from leti.model import (
    SPECIAL_TOKENS,
    load_model_and_tokenizer,
    resolve_device,
    resolve_dtype,
    save_model,
)
from leti.testing import make_tiny_model


def test_special_tokens_added_and_rows_mean_initialised(tiny_model_path):
    raw = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    old_rows = raw.get_input_embeddings().weight.detach().clone()
    model, tok = load_model_and_tokenizer(tiny_model_path, device="cpu")

    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(old_rows), len(old_rows) + 4))
    # Each token is one id even inside text, so training text can carry them verbatim.
    text_ids = tok.encode("<|good|>x = 1<|lang_feedback|>err<|/lang_feedback|>")
    assert ids[0] in text_ids and ids[2] in text_ids and ids[3] in text_ids

    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok) == len(old_rows) + 4
    torch.testing.assert_close(emb[: len(old_rows)], old_rows)
    for row in emb[len(old_rows) :]:
        torch.testing.assert_close(row, old_rows.mean(dim=0))
    # GPT-2 ties the output projection: logits exist for the new tokens too.
    assert model.get_output_embeddings().weight.shape[0] == len(tok)
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert tok.padding_side == "left" and tok.pad_token_id is not None


def test_tokens_the_tokenizer_has_beyond_the_matrix_start_at_the_mean_on_every_load(tmp_path):
    """A pad token added to a tokenizer saved without resizing its model (as leti's own refusal of
    a tokenizer without pad or eos advises) has no embedding row: resizing left that row unseeded
    random and the LeTI rows' mean took it in, so two loads of one model differed (and a run's
    arms did not share a start)."""
    path = make_tiny_model(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(path)
    tok.add_special_tokens({"pad_token": "[PAD]"})
    tok.save_pretrained(path)
    old_rows = AutoModelForCausalLM.from_pretrained(path).get_input_embeddings().weight.detach().clone()
    assert len(tok) == len(old_rows) + 1
    loads = [load_model_and_tokenizer(path, device="cpu") for _ in range(2)]
    (first, tok1), (second, _) = loads
    emb = first.get_input_embeddings().weight
    assert emb.shape[0] == len(tok1) == len(old_rows) + 1 + len(SPECIAL_TOKENS)
    torch.testing.assert_close(emb[: len(old_rows)], old_rows)
    for row in emb[len(old_rows):]:  # the pad token's row and leti's: the mean of the model's own rows
        torch.testing.assert_close(row, old_rows.mean(dim=0))
    torch.testing.assert_close(second.get_input_embeddings().weight, emb, rtol=0, atol=0)


def test_save_and_reload_keeps_tokens_and_weights(tiny_model_path, tmp_path):
    model, tok = load_model_and_tokenizer(tiny_model_path, device="cpu")
    out = save_model(model, tok, tmp_path / "ckpt")
    again, tok2 = load_model_and_tokenizer(str(out), device="cpu")
    assert len(tok2) == len(tok)
    assert [tok2.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [
        tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS
    ]
    # No second resize or re-initialisation on reload.
    torch.testing.assert_close(
        again.get_input_embeddings().weight, model.get_input_embeddings().weight
    )


def test_pad_token_falls_back_to_eos(tmp_path):
    path = make_tiny_model(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = None
    tok.save_pretrained(path)
    assert AutoTokenizer.from_pretrained(path).pad_token is None
    model, tok = load_model_and_tokenizer(path, device="cpu")
    assert tok.pad_token == tok.eos_token
    assert model.generation_config.pad_token_id == tok.eos_token_id


@pytest.mark.parametrize("name", ["/nonexistent/leti-model", "no-such-org/no-such-model-leti"])
def test_unloadable_model_is_one_line_error(name, hub_offline):
    # Offline mode fails the hub request at once, as an unreachable hub does after retries.
    with pytest.raises(LetiError) as info:
        load_model_and_tokenizer(name, device="cpu")
    message = str(info.value)
    assert "\n" not in message and name in message and "local directory" in message


def test_dtype_and_device_resolution():
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(LetiError, match="dtype='float8'"):
        resolve_dtype("float8", cpu)
    with pytest.raises(LetiError, match="device='gpu0'"):
        resolve_device("gpu0")


@pytest.mark.parametrize("name", ["./runs/tiny-model", "../tiny-model", "runs/a/tiny-model", "~/no-such-leti-model"])
def test_a_missing_local_path_is_named_at_once(name, tmp_path, monkeypatch, hub_offline):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LetiError) as info:
        load_model_and_tokenizer(name, device="cpu")
    message = str(info.value)
    assert message.startswith(f"no such model directory: {name} (") and "\n" not in message
    if not name.startswith("~"):
        assert f"(relative to the current directory {tmp_path})" in message
    assert "hub (" not in message  # the hub was not asked


def test_an_absolute_missing_path_is_not_a_repo_id(hub_offline):
    with pytest.raises(LetiError) as info:
        load_model_and_tokenizer("/nonexistent/model", device="cpu")
    assert str(info.value).startswith("no such model directory: /nonexistent/model; ")
    assert "Repo id" not in str(info.value)


def test_a_name_that_may_be_a_hub_id_says_both_failed(tmp_path, monkeypatch, hub_offline):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LetiError) as info:
        load_model_and_tokenizer("runs/tiny-model", device="cpu")
    message = str(info.value)
    assert message.startswith(f"'runs/tiny-model' is neither a local directory (cwd: {tmp_path}) nor loadable from the hub (")
    assert "\n" not in message


def test_a_run_on_a_mistyped_relative_path_says_both_failed(tmp_path, monkeypatch, hub_offline, capsys):
    """The run pins a hub model's commit before loading it (model_revision): that lookup was the
    first to fail on a mistyped path and spoke of the hub and revisions only."""
    from leti.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", "tiny-cpu", "--set", "model=checkpoints/iter3", "--run-dir", str(tmp_path / "r")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"leti: error: 'checkpoints/iter3' is neither a local directory (cwd: {tmp_path}) nor "
                           "loadable from the hub ("), last
    assert "revision" not in last


def test_a_directory_that_is_not_a_saved_model_says_what_is_missing(tiny_model_path, tmp_path, hub_offline):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LetiError, match=f"^model directory {empty} has no config.json"):
        load_model_and_tokenizer(str(empty), device="cpu")
    weights_only = tmp_path / "weights-only"
    AutoModelForCausalLM.from_pretrained(tiny_model_path).save_pretrained(weights_only)
    with pytest.raises(LetiError, match=f"^model directory {weights_only} has no tokenizer"):
        load_model_and_tokenizer(str(weights_only), device="cpu")
    afile = tmp_path / "model.bin"
    afile.write_text("x")
    with pytest.raises(LetiError, match=f"^model {afile} is a file, not a model directory"):
        load_model_and_tokenizer(str(afile), device="cpu")


def test_the_checkpoints_own_special_tokens_are_read_as_saved(tiny_model_path, tmp_path):
    """A prompt prefix such as <|good|> is checked against these (leti evaluate --prompt-prefix):
    the base model's tokenizer lacks LeTI's tokens, which loading adds; a saved LeTI checkpoint has them."""
    from leti.evaluation.generate import checkpoint_special_tokens

    model, tok = load_model_and_tokenizer(tiny_model_path, device="cpu")
    assert "<|good|>" in tok.get_vocab()
    base = checkpoint_special_tokens(tiny_model_path)
    assert "<|good|>" not in base and "<|endoftext|>" in base
    save_model(model, tok, tmp_path / "leti")
    assert set(SPECIAL_TOKENS) <= checkpoint_special_tokens(str(tmp_path / "leti"))


def test_an_adapter_over_a_relative_model_path_loads_from_any_directory(tiny_model_path, tmp_path, monkeypatch):
    """trainer.lora.save='adapter' over model=./my-model: the adapter records its base as an
    absolute path, so evaluating or resuming from another directory finds it."""
    import shutil

    from leti.training.config import LoraSettings, TrainerConfig
    from leti.training.lora import apply_lora

    shutil.copytree(tiny_model_path, tmp_path / "my-model")
    monkeypatch.chdir(tmp_path)
    model, tok = load_model_and_tokenizer("./my-model", device="cpu")
    cfg = TrainerConfig(lora=LoraSettings(enabled=True, r=2, save="adapter"))
    save_model(apply_lora(model, tok, cfg), tok, tmp_path / "adapter")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again, _ = load_model_and_tokenizer(str(tmp_path / "adapter"), device="cpu")
    assert again.peft_config["default"].base_model_name_or_path == str(tmp_path / "my-model")


def test_a_text_ending_in_eos_is_tokenized_once_when_the_tokenizer_adds_nothing(tiny_model_path):
    """A training text with training_text.append_eos ends in EOS; a tokenizer that adds no
    special tokens (GPT-2) needs no second pass to tell the text's EOS from an appended one."""
    from leti.model import encode_prompt

    _, tok = load_model_and_tokenizer(tiny_model_path, device="cpu")
    calls = []

    class Counting(type(tok)):
        def __call__(self, *args, **kwargs):
            calls.append(args)
            return super().__call__(*args, **kwargs)

    counting = copy.copy(tok)
    counting.__class__ = Counting
    text = "def f():\n    return 1\n" + tok.eos_token
    assert encode_prompt(counting, text) == tok(text).input_ids
    assert encode_prompt(counting, text)[-1] == tok.eos_token_id
    assert len(calls) == 2  # one per encode_prompt call


def test_a_composite_config_states_its_context_in_its_text_config():
    """Gemma 3, Llama 4 and Qwen3.5 checkpoints keep max_position_embeddings in text_config: the
    context was read as unknown (None), as for a model that states none."""
    from transformers import AutoConfig

    from leti.model import model_context

    text = dict(max_position_embeddings=333, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, head_dim=32, intermediate_size=64)
    composite = AutoConfig.for_model("gemma3", text_config=text)
    assert getattr(composite, "max_position_embeddings", None) is None
    assert model_context(composite) == 333
    assert model_context(AutoConfig.for_model("gpt2", n_positions=128)) == 128
    assert model_context(AutoConfig.for_model("bloom")) is None


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an MPS device")
@pytest.mark.parametrize("device", ["mps", "mps:0"])
def test_mps_without_mps_is_refused_in_one_line(device):
    """It passed, and torch failed with a traceback when the model was moved there (after the run began)."""
    why = "no MPS device is visible" if torch.backends.mps.is_built() else "this PyTorch has no MPS support"
    with pytest.raises(LetiError) as info:
        resolve_device(device)
    assert str(info.value) == f"device={device!r} but {why}; use device='cpu' or 'auto'"


@pytest.mark.parametrize("device", ["xpu", "meta"])
def test_a_torch_device_leti_does_not_run_on_is_refused_in_one_line(device):
    with pytest.raises(LetiError) as info:
        resolve_device(device)
    assert str(info.value) == (f"device={device!r} is not a device leti runs on; "
                               "use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_index_beyond_the_visible_gpus_is_refused_in_one_line():
    count = torch.cuda.device_count()
    assert resolve_device(f"cuda:{count - 1}") == torch.device(f"cuda:{count - 1}")
    with pytest.raises(LetiError, match=rf"^device='cuda:{count}' but only {count} CUDA GPUs? (is|are) visible "):
        resolve_device(f"cuda:{count}")


def test_a_model_directory_without_weights_or_with_cut_ones_names_the_fix(tiny_model_path, tmp_path, hub_offline):
    """transformers' "no file named model.safetensors ... found" (and a cut file's error) came
    without a word on what to do."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_path, model)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    with pytest.raises(LetiError) as info:
        load_model_and_tokenizer(str(model), device="cpu")
    assert str(info.value) == (f"model directory {model} has no weights (none of model.safetensors, pytorch_model.bin, "
                               "...); save them there with model.save_pretrained(DIR)")
    weights.write_bytes(data[:1000])  # a copy stopped half way
    with pytest.raises(LetiError) as info:
        load_model_and_tokenizer(str(model), device="cpu")
    message = str(info.value)
    assert message.startswith(f"model directory {model} could not be loaded (") and "\n" not in message
    assert message.endswith("); check that it holds what model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR) "
                            "write, whole")


def _save_tiny(path, model) -> str:
    from leti.testing import make_tiny_tokenizer

    model.save_pretrained(path)
    make_tiny_tokenizer(512).save_pretrained(path)
    return str(path)


def test_checkpoints_that_are_not_causal_lms_are_refused_in_one_line_naming_what_they_are(tmp_path, hub_offline):
    """An encoder loaded as a causal LM sees the tokens it predicts (the run finished with
    meaningless numbers); a seq2seq checkpoint was called a broken directory; a model saved without
    its head trained a random, unseeded one (every load of the run saw another model)."""
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    bert = _save_tiny(tmp_path / "bert", AutoModelForMaskedLM.from_config(AutoConfig.for_model("bert", vocab_size=512, **small)))
    with pytest.raises(LetiError, match=r"^.*/bert is a 'bert' encoder: .* set \"is_decoder\": true in its config.json"):
        load_model_and_tokenizer(bert, device="cpu")
    t5 = _save_tiny(tmp_path / "t5", AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(
        "t5", vocab_size=512, d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, decoder_start_token_id=0)))
    with pytest.raises(LetiError, match=r"^.*/t5 is a 't5' model, not a causal LM"):
        load_model_and_tokenizer(t5, device="cpu")
    llama = AutoConfig.for_model("llama", vocab_size=512, num_key_value_heads=2, **small)
    headless = _save_tiny(tmp_path / "headless", AutoModel.from_config(llama))
    with pytest.raises(LetiError, match=r"^.*/headless has no weights for its output layer \(lm_head.weight\)"):
        load_model_and_tokenizer(headless, device="cpu")
    # the same encoder as a decoder, and a model whose head is tied (never saved), load
    config = json.loads((tmp_path / "bert" / "config.json").read_text())
    (tmp_path / "bert" / "config.json").write_text(json.dumps({**config, "is_decoder": True}))
    assert type(load_model_and_tokenizer(bert, device="cpu")[0]).__name__ == "BertLMHeadModel"
    tied = _save_tiny(tmp_path / "tied", AutoModelForCausalLM.from_config(
        AutoConfig.for_model("llama", vocab_size=512, num_key_value_heads=2, tie_word_embeddings=True, **small)))
    load_model_and_tokenizer(tied, device="cpu")

"""The RRM on transformers' Qwen2.5-VL classes: loading (hub id or local path), LoRA or full fine-tuning, prompt
encoding identical to the MLLM client's transformers backend, answer-token log-probs, batched sampling.

Sequences have one layout everywhere: ``[left-padded prompt | answer tokens | right padding]``. Generation produces
it (left padding, then pad after EOS); SFT builds it from the target text; the log-prob code reads the answer
block, whose width is the generated / target width.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import torch

from editkit.config_meta import Range
from editkit.errors import UserError

DEFAULT_CHECKPOINT = "Qwen/Qwen2.5-VL-7B-Instruct"
VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
# LoRA only on the language model's attention (the vision tower's blocks are named qkv/proj, its MLP would match).
DEFAULT_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)$"


@dataclass
class ModelConfig:
    path: str = DEFAULT_CHECKPOINT
    """hub id or local dir (from_pretrained); a trained RRM's model/ dir"""
    device: str = "auto"
    """where the model runs: auto, cpu or cuda[:i]"""
    max_pixels: Annotated[int, Range(gt=0)] = 512 * 28 * 28
    """image processor budget per image (vision tokens grow with it)"""
    gradient_checkpointing: bool = False
    """recompute activations in backward to save memory"""


@dataclass
class LoraConfig:
    enabled: bool = True
    """false: full fine-tuning of the language model and the vision merger"""
    rank: Annotated[int, Range(gt=0)] = 16
    """rank of each LoRA update matrix"""
    alpha: Annotated[int, Range(gt=0)] = 32
    """LoRA scaling numerator: the update is scaled by alpha / rank"""
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0
    """dropout probability on the LoRA input"""
    target_modules: str = DEFAULT_TARGETS
    """regex over module names that get a LoRA (peft)"""
    train_vision: bool = False
    """full fine-tuning only: also train the vision tower (else only its merger)"""


@dataclass
class Answers:
    """Answer blocks aligned to a prompt batch: ids (B, A) padded with ``pad_id``; mask (B, A) True on real tokens."""

    ids: torch.Tensor
    mask: torch.Tensor
    texts: list[str] = field(default_factory=list)


def pick_device(device: str) -> tuple[str, torch.dtype]:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, (torch.bfloat16 if device.startswith("cuda") else torch.float32)


def load_rrm(config: ModelConfig, lora: Optional[LoraConfig] = None):
    """(model, processor); with ``lora`` the model is a peft model (LoRA) or fully trainable."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    device, dtype = pick_device(config.device)
    try:
        processor = AutoProcessor.from_pretrained(config.path)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(config.path, dtype=dtype)
    except OSError as error:
        raise UserError(f"cannot load Qwen2.5-VL from {config.path!r}: {error}") from None
    processor.tokenizer.padding_side = "left"
    size = dict(processor.image_processor.size)
    processor.image_processor.size = {**size, "longest_edge": config.max_pixels}
    model.to(device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if lora is not None:
        model = make_trainable(model, lora)
    return model, processor


def make_trainable(model, lora: LoraConfig):
    if lora.enabled:
        from peft import LoraConfig as PeftLoraConfig, get_peft_model

        return get_peft_model(model, PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                    target_modules=lora.target_modules))
    for name, parameter in model.named_parameters():  # full fine-tuning: the vision tower frozen unless asked
        parameter.requires_grad_(lora.train_vision or not name.startswith("model.visual.") or ".merger." in name)
    return model


def encode_prompts(processor, requests: list, device: str = "cpu"):
    """Left-padded prompt batch (input_ids, attention_mask, pixel_values, image_grid_thw, ...), encoded exactly as
    the MLLM client's transformers backend encodes its requests."""
    from editkit.mllm.hf_backend import encode_requests

    return encode_requests(processor, requests, device)


def answers_from_texts(processor, texts: list[str], device: str = "cpu") -> Answers:
    """Target answers for SFT: the text's tokens plus EOS (the model must learn to stop), right-padded."""
    tokenizer = processor.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]
    return _pad_rows(rows, tokenizer.pad_token_id, device, texts)


def _pad_rows(rows: list[list[int]], pad_id: int, device: str, texts: list[str]) -> Answers:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return Answers(ids.to(device), mask.to(device), list(texts))


def join(prompts, answers: Answers) -> dict:
    """Model inputs for ``[prompt | answer]``: the answer block appended, its padding masked out."""
    inputs = {k: v for k, v in prompts.items()}
    inputs["input_ids"] = torch.cat([prompts["input_ids"], answers.ids], dim=1)
    inputs["attention_mask"] = torch.cat([prompts["attention_mask"], answers.mask.to(prompts["attention_mask"].dtype)],
                                         dim=1)
    if "mm_token_type_ids" in prompts:  # answer tokens are text
        inputs["mm_token_type_ids"] = torch.cat([prompts["mm_token_type_ids"], torch.zeros_like(answers.ids)], dim=1)
    return inputs


def sft_labels(prompts, answers: Answers) -> torch.Tensor:
    """Labels for ``join(prompts, answers)``: -100 on every prompt token and on the answer padding."""
    prompt_labels = torch.full_like(prompts["input_ids"], -100)
    answer_labels = answers.ids.masked_fill(~answers.mask, -100)
    return torch.cat([prompt_labels, answer_labels], dim=1)


def answer_logprobs(model, prompts, answers: Answers) -> torch.Tensor:
    """(B, A) log-probability of each answer token under ``model`` (float32; padding positions are 0)."""
    width = prompts["input_ids"].shape[1]
    logits = model(**join(prompts, answers)).logits
    # the logit at position t predicts token t + 1: the answer block is predicted from width - 1 on
    predicting = logits[:, width - 1 : width - 1 + answers.ids.shape[1]].float()
    logp = torch.log_softmax(predicting, dim=-1).gather(-1, answers.ids.unsqueeze(-1)).squeeze(-1)
    return logp.masked_fill(~answers.mask, 0.0)


@torch.no_grad()
def generate(model, processor, requests: list, max_new_tokens: int, temperature: float,
             device: str = "cpu") -> tuple[Any, Answers]:
    """One batched generate() over ``requests`` (left padding); returns (prompt inputs, answers up to and
    including EOS). ``temperature`` 0 is greedy."""
    prompts = encode_prompts(processor, requests, device)
    sampling = temperature > 0
    unwrapped = getattr(model, "module", model)  # DDP wraps the model; generate lives on the inner one
    # a sampled vision placeholder would make the answer unreadable by the next forward (features/tokens mismatch)
    tokenizer = processor.tokenizer
    suppress = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS if t in tokenizer.get_vocab()]
    out = unwrapped.generate(**prompts, max_new_tokens=max_new_tokens, do_sample=sampling,
                             temperature=temperature if sampling else None, top_p=None, top_k=None,
                             suppress_tokens=suppress or None, return_dict_in_generate=True)
    new = out.sequences[:, prompts["input_ids"].shape[1]:].cpu().tolist()
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows, texts = [], []
    for ids in new:
        stop = next((i for i, t in enumerate(ids) if t == eos), None)
        kept = ids if stop is None else ids[: stop + 1]  # EOS is part of the trajectory: the policy chose to stop
        rows.append(kept if kept else [eos])
        texts.append(processor.tokenizer.decode(kept if stop is None else kept[:-1], skip_special_tokens=True))
    return prompts, _pad_rows(rows, processor.tokenizer.pad_token_id, device, texts)


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_model_dir(model, processor, directory) -> None:
    """A plain Qwen2.5-VL dir (LoRA merged) that ``from_pretrained``, the transformers backend and vLLM load."""
    import copy

    inner = getattr(model, "module", model)
    if hasattr(inner, "merge_and_unload"):  # peft: merge a copy, keep training the adapter
        inner = copy.deepcopy(inner).merge_and_unload()
    inner.save_pretrained(directory)
    processor.save_pretrained(directory)

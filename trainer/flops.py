"""FLOPs per image-text pair of one TCL training step, computed from the config.

Counting rules:
- 2 FLOPs per multiply-accumulate of every matrix product: linear layers, the patch embedding (a
  matmul over 3 x p x p inputs per patch), attention scores (Q K^T) and attention-weighted values (P V),
  the contrastive similarities. Softmax, norms, activations, embeddings, elementwise ops and the optimizer
  are not counted.
- A pass with gradients (forward + backward) counts 3x its forward, a momentum / no-grad pass 1x.
- Text length is data.max_tokens (the padded length with data.fixed_length, the worst case otherwise);
  the image has grid^2 + 1 tokens. A term of weight 0 is not computed, so not counted.
- The model count follows the algorithm as the official code runs it: the image keys/values of the
  cross-attention projected in every fusion pass (ITM positive, two ITM negatives, MLM student, MLM
  teacher), MLM logits at every text position. MFU is always reported against it. The executed count
  applies our structural savings: image keys/values once per image set per layer, shared by all
  fusion passes over those images, and the MLM decoder on masked positions only (their expected number).

Paper config (configs/pretrain_4m.yaml): about 289 GFLOP model count, ViT 64%, fusion 28%.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, computed_field

from trainer.config import RunConfig, TextConfig, VisionConfig

TRAINED = 3
"""Forward + backward of a pass with gradients, in forwards."""
NO_GRAD = 1
H100_SXM_BF16_FLOPS = 989e12
"""Dense bf16 peak of an H100 SXM, the denominator of MFU."""


class FlopsCount(BaseModel):
    """FLOPs per image-text pair of one training step, by component."""

    model_config = ConfigDict(frozen=True)

    vision: float
    """ViT passes: online view 1 (trained) and momentum view 2."""
    text: float
    """Text-encoder passes: online and momentum caption, MLM student and teacher on the masked caption."""
    fusion: float
    """Fusion-encoder passes, with the projections of the image tokens to cross-attention keys/values."""
    heads: float
    """Projections to the embedding (CLS and LMI locals), ITM head, MLM head."""
    contrastive: float
    """Similarities of CMA, IMC (against batch + queue) and LMI (against the batch's locals)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> float:
        return self.vision + self.text + self.fusion + self.heads + self.contrastive

    def shares(self) -> dict[str, float]:
        """Fraction of the total per component."""
        return {name: getattr(self, name) / self.total for name in ("vision", "text", "fusion", "heads", "contrastive")}


def linear(tokens: float, fan_in: int, fan_out: int) -> float:
    return 2.0 * tokens * fan_in * fan_out


def attention(queries: int, keys: int, width: int) -> float:
    """Scores and weighted values over all heads (heads x head_dim = width)."""
    return 2 * 2.0 * queries * keys * width


def encoder_layer(tokens: int, width: int, hidden: int) -> float:
    """Pre- or post-norm transformer layer: QKV, self-attention, output projection, two-layer MLP."""
    return linear(tokens, width, 3 * width) + attention(tokens, tokens, width) + linear(tokens, width, width) \
        + linear(tokens, width, hidden) + linear(tokens, hidden, width)


def vit_forward(v: VisionConfig) -> float:
    """One image through the ViT (patch embedding + layers)."""
    patches = v.grid_size**2
    hidden = int(v.width * v.mlp_ratio)
    return linear(patches, 3 * v.patch_size**2, v.width) + v.depth * encoder_layer(patches + 1, v.width, hidden)


def text_forward(t: TextConfig, length: int) -> float:
    """One caption through the text encoder (self-attention layers)."""
    return t.text_layers * encoder_layer(length, t.hidden_size, t.intermediate_size)


def fusion_forward(t: TextConfig, length: int, image_tokens: int) -> float:
    """One (text, image) pair through the fusion layers, without the image keys/values."""
    cross = linear(length, t.hidden_size, t.hidden_size) * 2 + attention(length, image_tokens, t.hidden_size)
    return t.fusion_layers * (encoder_layer(length, t.hidden_size, t.intermediate_size) + cross)


def image_keys_values(t: TextConfig, image_tokens: int, image_width: int) -> float:
    """One image's tokens projected to the keys and values of every fusion layer."""
    return t.fusion_layers * 2 * linear(image_tokens, image_width, t.hidden_size)


def flops_per_sample(cfg: RunConfig, *, executed: bool = False) -> FlopsCount:
    """The model count (executed=False, the MFU numerator) or our executed count, per image-text pair."""
    m, v, t, w = cfg.model, cfg.model.vision, cfg.model.text, cfg.loss
    length, batch, dim = cfg.data.max_tokens, cfg.data.batch_size, m.embed_dim
    image_tokens = v.grid_size**2 + 1
    itm, mlm = w.itm > 0, w.mlm > 0
    distill = mlm and w.alpha > 0  # the MLM teacher runs only to distil

    vision = (TRAINED + NO_GRAD) * vit_forward(v)
    text = (TRAINED + NO_GRAD + TRAINED * mlm + NO_GRAD * distill) * text_forward(t, length)

    trained_pairs = 3 * itm + mlm  # ITM positive + 2 negatives, MLM student: all on the online view 1
    trained_kv_sets = (1 if trained_pairs else 0) if executed else trained_pairs
    fusion = (TRAINED * trained_pairs + NO_GRAD * distill) * fusion_forward(t, length, image_tokens) \
        + (TRAINED * trained_kv_sets + NO_GRAD * distill) * image_keys_values(t, image_tokens, v.width)

    mlm_positions = w.mlm_probability * length if executed else length
    mlm_head = linear(mlm_positions, t.hidden_size, t.hidden_size) + linear(mlm_positions, t.hidden_size, t.vocab_size)
    heads = (TRAINED + NO_GRAD) * (linear(1, v.width, dim) + linear(1, t.hidden_size, dim)) \
        + NO_GRAD * (w.lmi_image > 0) * linear(v.grid_size**2, v.width, dim) \
        + NO_GRAD * (w.lmi_text > 0) * linear(length - 1, t.hidden_size, dim) \
        + TRAINED * itm * linear(3, t.hidden_size, 2) \
        + (TRAINED * mlm + NO_GRAD * distill) * mlm_head

    against_queue = linear(1, dim, batch + m.queue_size)
    cma_terms = (w.cma_i2t > 0) + (w.cma_t2i > 0)
    contrastive = cma_terms * (TRAINED + NO_GRAD * (w.alpha > 0)) * against_queue \
        + ((w.imc_i2i > 0) + (w.imc_t2t > 0)) * TRAINED * against_queue \
        + TRAINED * (w.lmi_image > 0) * linear(1, dim, batch * m.local_grid**2) \
        + TRAINED * (w.lmi_text > 0) * linear(1, dim, batch * (length - 1))
    return FlopsCount(vision=vision, text=text, fusion=fusion, heads=heads, contrastive=contrastive)


def mfu(samples_per_sec: float, flops_per_pair: float, peak_flops: float = H100_SXM_BF16_FLOPS) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's peak."""
    return samples_per_sec * flops_per_pair / peak_flops

"""Weights of the TCL objectives and the distillation schedule."""

from __future__ import annotations

from pydantic import Field

from trainer.config.base import Section


class LossConfig(Section):
    """Total = sum of weight x term. The defaults reproduce the official total
    (loss_ita = mean of the six contrastive terms, plus ITM and MLM); weight 0 skips a term."""

    cma_i2t: float = Field(1 / 6, ge=0)
    cma_t2i: float = Field(1 / 6, ge=0)
    imc_i2i: float = Field(1 / 6, ge=0)
    imc_t2t: float = Field(1 / 6, ge=0)
    lmi_image: float = Field(1 / 6, ge=0)
    lmi_text: float = Field(1 / 6, ge=0)
    itm: float = Field(1.0, ge=0)
    mlm: float = Field(1.0, ge=0)
    alpha: float = Field(0.4, ge=0, le=1)
    """Momentum-distillation weight of CMA and MLM targets."""
    alpha_warmup_epochs: float = Field(1.0, ge=0)
    """alpha ramps linearly from 0 over this many epochs (0 = constant)."""
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    itm_negative_temp: float | None = Field(None, gt=0)
    """Temperature of the softmax that draws ITM's hard negatives from the in-batch ITC similarities; None =
    the learned contrastive temperature (the paper). From scratch, ITC sharpens long before the fusion encoder
    can tell near-duplicates apart, and ITM stays at its chance value; a higher value draws easier negatives."""

    def weights(self) -> dict[str, float]:
        """Term name -> weight, in logging order."""
        names = ("cma_i2t", "cma_t2i", "imc_i2i", "imc_t2t", "lmi_image", "lmi_text", "itm", "mlm")
        return {name: getattr(self, name) for name in names}

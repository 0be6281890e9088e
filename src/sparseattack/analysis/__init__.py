"""Analyses of attacks: interpretability (ASM, CAM, IS) of perturbations, after StrAttack Sec. 6 and
Appendix E (Xu et al., ICLR 2019)."""
from .interpret import (adversarial_saliency_map, class_activation_map, interpretability_score, is_curve,
                        DEFAULT_IS_PERCENTILES)

__all__ = ["adversarial_saliency_map", "class_activation_map", "interpretability_score", "is_curve",
           "DEFAULT_IS_PERCENTILES"]

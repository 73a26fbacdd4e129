"""Student-t quantiles without SciPy (Cornish-Fisher expansion around the normal quantile;
accurate to ~1e-3 for df >= 5, ample for confidence intervals in tests)."""

from statistics import NormalDist


def t_quantile(p: float, df: int) -> float:
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4

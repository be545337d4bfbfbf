"""ECM and the readable metrics against values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from affectsr.emotion import (
    ECM_EPS,
    accuracy,
    confusion_matrix,
    density_histograms,
    ecm,
    ecm_terms,
    entropy,
    fidelity_report,
    label_agreement,
    mean_kl,
    sr_vs_hr_confusion,
)

# Two faces, two classes. HR: certain and opposite; SR: undecided.
P_HR = np.array([[1.0, 0.0], [0.0, 1.0]])
P_SR = np.array([[0.5, 0.5], [0.5, 0.5]])


def test_density_histograms_by_hand():
    h = density_histograms(P_HR)
    # class 0 values {1, 0}: one in bin 0, one in bin 9 (1.0 belongs to the last bin); density = count / (N * 0.1)
    expected = np.zeros((2, 10))
    expected[:, 0] = expected[:, 9] = 5.0
    np.testing.assert_allclose(h, expected)
    np.testing.assert_allclose(density_histograms(P_SR)[:, 5], 10.0)  # 0.5 opens bin [0.5, 0.6)
    np.testing.assert_allclose(h.sum(1) * 0.1, 1.0)  # densities integrate to 1


def test_entropy_by_hand():
    np.testing.assert_allclose(entropy(P_HR), [0.0, 0.0])  # 0 log 0 = 0
    np.testing.assert_allclose(entropy(P_SR), [math.log(2)] * 2)
    np.testing.assert_allclose(entropy([[0.25] * 4]), [math.log(4)])


def test_ecm_by_hand():
    # per class: (5 - 0)^2 + (0 - 10)^2 + (5 - 0)^2 = 150; two classes -> L_H = 300
    # L_conf = |0 - ln 2| = ln 2; ECM = 0.5 * 300 + ln(ln 2)
    t = ecm_terms(P_HR, P_SR)
    assert t.l_h == pytest.approx(300.0)
    assert t.l_conf == pytest.approx(math.log(2))
    assert t.ecm == pytest.approx(150.0 + math.log(math.log(2)))
    assert ecm(P_HR, P_SR) == pytest.approx(149.63348, abs=1e-5)
    assert ecm(P_HR, P_SR, alpha=0.0) == pytest.approx(math.log(math.log(2)))


def test_ecm_second_example_with_three_classes():
    p_hr = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    p_sr = np.array([[0.7, 0.1, 0.2], [0.1, 0.8, 0.1]])
    # Only face 0's classes 1 and 2 swap 0.2 <-> 0.1: bins 2 and 1 trade one count (density 5) in each class.
    # class 1: HR {0.2, 0.8} vs SR {0.1, 0.8}: bin 2 -5, bin 1 +5 -> 50; class 2 mirrors it -> 50. L_H = 100.
    # Entropies of face 0 are equal (a permutation), face 1 identical -> L_conf = 0 -> guarded.
    t = ecm_terms(p_hr, p_sr)
    assert t.l_h == pytest.approx(100.0)
    assert t.l_conf == pytest.approx(0.0, abs=1e-15)  # float rounding may leave ~1e-17: the floor still applies
    assert t.ecm == pytest.approx(50.0 + math.log(ECM_EPS))


def test_ecm_guard_for_identical_inputs():
    p = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert ecm(p, p) == pytest.approx(math.log(ECM_EPS))  # -27.63, finite
    assert math.isfinite(ecm(p, p))


def test_readable_metrics_by_hand():
    p_hr = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    p_sr = np.array([[0.6, 0.4], [0.3, 0.7], [0.4, 0.6]])
    assert label_agreement(p_hr, p_sr) == pytest.approx(2 / 3)
    labels = np.array([0, 1, 1])
    assert accuracy(p_hr, labels) == pytest.approx(2 / 3)
    assert accuracy(p_sr, labels) == pytest.approx(1.0)
    kl0 = 0.9 * math.log(0.9 / 0.6) + 0.1 * math.log(0.1 / 0.4)
    kl1 = 0.2 * math.log(0.2 / 0.3) + 0.8 * math.log(0.8 / 0.7)
    kl2 = 0.6 * math.log(0.6 / 0.4) + 0.4 * math.log(0.4 / 0.6)
    assert mean_kl(p_hr, p_sr) == pytest.approx((kl0 + kl1 + kl2) / 3)
    assert mean_kl(p_hr, p_hr) == pytest.approx(0.0)
    np.testing.assert_array_equal(sr_vs_hr_confusion(p_hr, p_sr), [[1, 1], [0, 1]])
    r = fidelity_report(p_hr, p_sr, labels)
    assert (r.n, r.accuracy_hr, r.accuracy_sr) == (3, pytest.approx(2 / 3), 1.0)
    assert fidelity_report(p_hr, p_sr).accuracy_hr is None


def test_confusion_matrix_rows_true_columns_pred():
    m = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


@pytest.mark.parametrize("bad", [
    np.array([[2.0, -1.0]]),  # logits, not probabilities
    np.array([0.5, 0.5]),  # not N x C
    np.array([[np.nan, 1.0]]),
    np.zeros((0, 7)),
])
def test_bad_inputs_are_refused(bad):
    with pytest.raises(ValueError):
        ecm(bad, bad)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="same shape"):
        ecm(P_HR, np.full((3, 2), 0.5))

"""Classical post-processing: pure numpy, no qiskit.  Grows into sifting → estimation →
Cascade → verification → privacy amplification (issue 3); today it holds sifting and the QBER
estimate with its confidence interval."""

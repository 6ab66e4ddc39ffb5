"""The float32 constants of the Gaussian sketch entries, for the Triton kernel
(:mod:`prism_kernels.triton.sketch`) and the torch reference (:mod:`prism_kernels.reference.sketch`).

The numbers are those of ``csrc/include/prism/gaussian_table.h``, which the C++ and CUDA code read;
``tests/test_gaussian_table.py`` parses that header and checks that they are equal. Each is a double,
rounded once to float32 where it is used (as the header's ``PRISM_F32`` does). Polynomials are in
Horner form, highest power first: ``p = c[0]``, then ``p = p * x + c[i]``.
"""

#: ln m = 2 s * P(s^2), s = (m - 1) / (m + 1): 1/13, 1/11, ..., 1/3, 1.
LOG_SERIES = (0.07692307692307693, 0.09090909090909091, 0.1111111111111111, 0.14285714285714285, 0.2,
              0.3333333333333333, 1.0)
#: sin x = x * P(x^2) on [0, pi/2): 1/13!, -1/11!, ..., -1/3!, 1.
SIN_SERIES = (1.6059043836821613e-10, -2.505210838544172e-08, 2.7557319223985893e-06, -0.0001984126984126984,
              0.008333333333333333, -0.16666666666666666, 1.0)
#: cos x = P(x^2) on [0, pi/2): 1/16!, -1/14!, ..., 1/4!, -1/2, 1.
COS_SERIES = (4.779477332387385e-14, -1.1470745597729725e-11, 2.08767569878681e-09, -2.755731922398589e-07,
              2.48015873015873e-05, -0.001388888888888889, 0.041666666666666664, -0.5, 1.0)
SQRT2 = 1.4142135623730951  #: log_unit folds the mantissa into [sqrt(1/2), sqrt(2))
LN2 = 0.6931471805599453
TWO_POW_M24 = 5.9604644775390625e-08  #: u = ((a >> 8) + 1) 2^-24
TWO_POW_M22 = 2.384185791015625e-07  #: the angle's fraction of a quadrant, 22 bits
HALF_PI = 1.5707963267948966

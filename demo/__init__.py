"""``make demo``: the platform end to end on generated data, against the stack ``make up`` started.

The top layer: it drives the domain code (:mod:`secml`), the training flows (:mod:`training`) and
serving (:mod:`serving`); nothing below imports it. :mod:`demo.abp` and :mod:`demo.dfp` train and
promote each detector, :mod:`demo.run` adds the Triton sync and traffic through the gateway.
"""

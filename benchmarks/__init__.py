"""Side-by-side benchmarks of torchconv_ext against torch, and kernel profiling.

Entry points:

* ``python -m benchmarks [suite ...] [--dtype fp32|fp16|bf16|all] [--quick]`` — time every
  suite's cases, write ``benchmarks/results/<device>/<suite>-<dtype>.{json,csv,md}`` and plots;
* ``python -m benchmarks.profile <suite> <case>`` — a ``torch.profiler`` trace of one case, the
  kernel table, the autotuner's choices and the compiled kernels' resources;
* ``python -m benchmarks.report [DIR]`` — regenerate tables and plots from result files.

Every suite is a list of real layers (``shapes.py``), checked and timed alike (``measure.py``);
see ``benchmarks/README.md`` for adding one and for the record format.
"""

"""The lab: a neuroscientist's experiments run on the network, importable and testable without FastAPI.

* :mod:`app.lab.tuning`: virtual electrophysiology, orientation tuning of every channel (OSI, 1 − CV);
* :mod:`app.lab.fields` and :mod:`app.lab.gabor`: early linear receptive fields and their 2-D Gabor fits;
* :mod:`app.lab.gradcam`: which image regions drove a class (Grad-CAM, through captum);
* :mod:`app.lab.similarity`: two images compared layer by layer;
* :mod:`app.lab.jobs` runs long experiments as cancellable jobs; :class:`app.lab.service.Lab` holds one
  process's jobs and cached results; :mod:`app.lab.svg` and :mod:`app.lab.images` draw the results.
"""

"""The modules behind the public job functions (``stn_deploy.train``, ``.export``, ``.doctor``,
``.validate``, ``.run``, ``.bench``): one module per job, named apart from the function, so that
``stn_deploy.export`` is always the function and this package's ``export`` its module."""

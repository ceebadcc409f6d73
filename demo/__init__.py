"""Demo and test data, kept out of the runtime image: the synthetic event generator (`demo.generator`) and the
`pulse demo` runner (`demo.runner`). Installed by the editable dev install; the Dockerfile does not copy it."""

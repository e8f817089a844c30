# Fails unless README.md contains SNIPPET verbatim: the README's quick start
# is the compiled examples/quickstart/readme_quickstart.cpp, so it can't rot.
file(READ "${README}" readme)
file(READ "${SNIPPET}" snippet)
string(FIND "${readme}" "${snippet}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md does not contain ${SNIPPET} verbatim; copy it into the quick start")
endif()

# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Learning symmetry
#
# Molecules do not care how they are oriented in space, so a force field, a generative
# model or a denoiser for molecules should be *equivariant*: rotate the input and the
# output rotates with it. There are two ways to get there. One builds the symmetry into
# the architecture; the other trains an unconstrained network on randomly rotated data
# and hopes it learns the symmetry. This book measures, derives and executes what
# happens along the second route, and what goes wrong along the first.
#
# Every chapter states its result as a theorem or proposition, proves or motivates it,
# and then checks it numerically with the shared library `equivlib`. Every number
# quoted in the prose is computed by the cells of the chapter when the book is built.
#
# The two sources are {cite}`shen2025training`, which splits the loss of a model
# trained with rotation augmentation into a part caused by its failure to be
# equivariant and the rest, and {cite}`xie2025tale`, which shows that the parameter
# symmetries of an unconstrained network leave spurious minima inside an equivariant
# one.
#
# ## What the book found
#
# Each chapter asks one question. The answers below are the chapters' own computed sentences
# and figures, read from the executed chapters when the book is built, so they change when a
# chapter's result changes.

# %% tags=["parameters"]
PROFILE = "quick"  # the profile the chapters were built with (this page only reads them)
SEED = 0
DEVICE = "auto"

# %% tags=["hide-input"]
from pathlib import Path

from IPython.display import Image

from equivlib.book import chapter_summaries, findings_table, glue, tally
from equivlib.config import chapter_setup

chapter_setup(globals(), known=[])
summaries = chapter_summaries(sorted(Path("book/generated").glob("[0-9][0-9]_*.ipynb")))
for s in summaries:
    glue(f"findings-{s.prefix}-question", s.question)
    glue(f"findings-{s.prefix}-answer", s.answer)
    glue(f"findings-{s.prefix}-figure", Image(data=s.figure_png, format="png"))
findings = findings_table(summaries)
glue("findings-claims", findings.style.hide(axis="index"))
glue("findings-tally", tally(findings))
glue("findings-n", len(findings))

# %% [markdown]
# ### {doc}`01_loss_decomposition`
#
# **Question.** {glue:md}`findings-ch1-question`
#
# **Answer.** {glue:md}`findings-ch1-answer`
#
# ```{glue:figure} findings-ch1-figure
# :figwidth: 60%
# ```
# ### {doc}`02_learning_dynamics`
#
# **Question.** {glue:md}`findings-ch2-question`
#
# **Answer.** {glue:md}`findings-ch2-answer`
#
# ```{glue:figure} findings-ch2-figure
# :figwidth: 60%
# ```
# ### {doc}`03_curvature`
#
# **Question.** {glue:md}`findings-ch3-question`
#
# **Answer.** {glue:md}`findings-ch3-answer`
#
# ```{glue:figure} findings-ch3-figure
# :figwidth: 60%
# ```
# ### {doc}`04_gradients_kl`
#
# **Question.** {glue:md}`findings-ch4-question`
#
# **Answer.** {glue:md}`findings-ch4-answer`
#
# ```{glue:figure} findings-ch4-figure
# :figwidth: 60%
# ```
# ### {doc}`05_head_theorem`
#
# **Question.** {glue:md}`findings-ch5-question`
#
# **Answer.** {glue:md}`findings-ch5-answer`
#
# ```{glue:figure} findings-ch5-figure
# :figwidth: 60%
# ```
# ### {doc}`06_hidden_symmetries`
#
# **Question.** {glue:md}`findings-ch6-question`
#
# **Answer.** {glue:md}`findings-ch6-answer`
#
# ```{glue:figure} findings-ch6-figure
# :figwidth: 60%
# ```
# ### {doc}`07_molecular_dynamics`
#
# **Question.** {glue:md}`findings-ch7-question`
#
# **Answer.** {glue:md}`findings-ch7-answer`
#
# ```{glue:figure} findings-ch7-figure
# :figwidth: 60%
# ```
#
# ## What reproduced and what did not
#
# Every claim checked in the book, with our number and the verdict computed from it (each
# chapter ends with the same table for its own claims). Of the {glue:text}`findings-n` claims:
# {glue:md}`findings-tally`.
#
# ```{glue:figure} findings-claims
# :name: tab-findings-claims
#
# The claims of {cite}`shen2025training` and {cite}`xie2025tale`, and some of our own, as the
# chapters checked them.
# ```
#
# ## How to read and rerun
#
# The published book is built with the `full` profile on one GPU; the default
# `quick` profile builds the whole book on a laptop CPU in minutes, with smaller models
# and data, and the same code. Each chapter begins with a `parameters` cell
# (`PROFILE`, `SEED`, `DEVICE` and chapter-specific sizes); to rerun one with other
# values, see the project README (papermill or `make chapter`).
#
# ```{tableofcontents}
# ```

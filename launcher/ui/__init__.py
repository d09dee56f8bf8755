"""`launch-ui`: a local web page over the same compose -> validate -> plan -> execute/submit path as `launch`.

app.py (routes, token, main), forms.py (schema -> form fields), checks.py (compose/validate/dry run in-process,
through launcher.cli's own functions), launches.py (start/stop/resume `launch` as a detached process),
runview.py (runs table, metrics by cursor, log tails), recipes.py (save/load a recipe file), static/ (page).
"""

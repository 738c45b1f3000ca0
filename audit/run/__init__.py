"""The run layer: what an audit is asked to do (:mod:`.config`), the thresholds it is judged by
(:mod:`.policy`), what it finds (:mod:`.findings`), the loop over the families (:mod:`.runner`)
and the run folder it writes and the reports and app read (:mod:`.run_folder`)."""

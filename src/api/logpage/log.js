// Placeholder: the log page's script (branch task/logui writes it).

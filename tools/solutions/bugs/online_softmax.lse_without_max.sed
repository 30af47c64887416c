# Returns log(sum) as the logsumexp, forgetting that the sum is relative to the running maximum.
s/return st->max + log(st->sum);/return log(st->sum);/

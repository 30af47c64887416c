# Leaves dropped keys out of the normaliser (dropout acts after the softmax: they count).
s/st->sum += e;.*/st->sum += e * keep[j];/

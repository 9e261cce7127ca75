# A tiny calculator, the code under test.
add() { echo $(( $1 + $2 )); }

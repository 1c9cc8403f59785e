"""sklearn's estimator checks on ActiveLearner, around LogisticRegression, a
pipeline and a net.

Every applicable check passes, so there is no expected-failure list. (The
array-API check is skipped by sklearn itself unless SCIPY_ARRAY_API is set.)
"""

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import skal
from tests.conftest import TinyMLP


@parametrize_with_checks(
    [
        skal.ActiveLearner(LogisticRegression()),
        # a pipeline validates its own input: X reaches it as given
        skal.ActiveLearner(make_pipeline(StandardScaler(), LogisticRegression())),
        skal.ActiveLearner(
            skal.NeuralNetClassifier(TinyMLP, max_epochs=30, lr=0.01, batch_size=64)
        ),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
